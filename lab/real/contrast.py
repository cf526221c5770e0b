"""Benign contrast prompts for the real track: harmless requests that carry the words of harmful ones.

A refusal must follow harm, not vocabulary. Harmful training prompts say "kill", "weapon", "drug",
"hack", "steal"; if no benign training prompt says them too, the word alone predicts a refusal and the
adapter refuses "How do I kill a stuck Python process?". These prompts put the same words into
harmless requests of many kinds, so the contrast is on harm itself:

- `homonym`:     the word means something harmless here (kill a process, shoot a photo, execute a script);
- `safe_target`: the act is fine on this target (kill weeds, smash garlic, crack an egg, poison ivy);
- `fiction`:     games, novels, films and sport (steal a base, a murder-mystery plot, a boss fight);
- `history`:     how past violence, crimes and wars happened and why (education, not instructions);
- `protect`:     safety, defence and recognition (spot a scam, a drugged drink, a phishing email);
- `definition`:  what a sensitive term or crime means, and what the law says about it;
- `health`:      medical, drug and mental-health questions whose right reply is a careful answer;
- `figurative`:  idioms built on violent words (kill it on stage, blow the audience away).

They were written for this track by hand from these kinds, without reading any evaluation set; each is
asked in several forms (question, imperative, first person, with context), so that neither the form
nor the length of a prompt stands in for its harm. `edgy_seed_topics` feeds the Self-Instruct stage
with subjects of the same kind, so the base writes more such questions in its own words.
"""

from __future__ import annotations

import random

# (kind, subject phrase that completes "how (do I|to) ...", a question form) -- one line per request
ACTS = {
    "homonym": [
        "kill a Python process that stopped responding", "kill all the background jobs in my terminal",
        "kill a zombie process on Linux", "shoot a photo of the night sky with my phone",
        "shoot a short film on a low budget", "execute a SQL query from a Python script",
        "execute a shell script at startup", "terminate an EC2 instance I no longer need",
        "attack the problem of slow page loads on my website", "crack my knuckles without hurting my hands",
        "break a long function into smaller ones", "exploit the symmetry of a matrix to speed up a computation",
        "hijack the attention of my audience in the first minute of a talk", "bomb-proof my backup strategy",
        "destroy a Docker container and its volumes", "strip the paint off an old dresser",
        "burn a CD of my own music", "fire a cannon in a historical reenactment safely",
        "blow up a photo to poster size without losing quality", "hang a heavy mirror on a drywall",
        "choke up on a baseball bat for more control", "smoke a brisket on a charcoal grill",
        "capture the flag in a cybersecurity training competition", "trap a variable in a closure in JavaScript",
        "inject dependencies in a Java Spring application", "shoot a basketball with better form",
        "cut the cord and stop paying for cable", "nuke my node_modules folder and reinstall packages",
        "drop a table in PostgreSQL", "gut and rebuild an old kitchen", "eliminate duplicate rows in Excel",
        "hack together a quick prototype for a hackathon", "butcher a whole chicken into eight pieces",
    ],
    "safe_target": [
        "kill the weeds in my lawn without harming my dog", "kill mold on a bathroom ceiling",
        "get rid of fruit flies in my kitchen", "poison-proof my house for a new toddler",
        "smash garlic with the flat of a knife", "crack a coconut open at home", "beat egg whites into stiff peaks",
        "slaughter a chicken humanely on a small farm", "trap a mouse without killing it",
        "kill bacteria on a cutting board", "destroy old hard drives before recycling them",
        "shred documents that have my bank details", "burn dead leaves safely in my garden",
        "blow out a stubborn candle wick", "break in a new pair of leather boots",
        "steal back time in a busy week for exercise", "get rid of a wasp nest under my roof safely",
        "kill the bacteria in well water before drinking it", "cut down a small tree in my backyard",
        "remove a tick from my dog's ear", "treat a poison ivy rash",
    ],
    "fiction": [
        "steal a base in baseball", "defeat the final boss in a video game",
        "write a murder-mystery plot with a clever twist", "plan a heist for my tabletop RPG campaign",
        "describe a sword fight in my fantasy novel", "make a villain in my story sound menacing",
        "win a fistfight scene in a screenplay without it feeling fake", "checkmate the king quickly in chess",
        "sink my opponent's battleship in the board game", "ambush other players in a paintball match",
        "poison an enemy in a role-playing video game", "assassinate a target in the Hitman video game",
        "write a thriller where a hacker saves the city", "stage a fake sword duel for a school play",
        "knock out my opponent in a boxing video game", "write a scary ghost story to tell at camp",
    ],
    "history": [
        "the Rwandan genocide happened", "the atomic bombs were dropped on Hiroshima and Nagasaki",
        "the Nazis rose to power in Germany", "the Mafia became powerful in the United States",
        "the September 11 attacks were planned", "the Titanic sank", "medieval armies besieged castles",
        "the Black Death spread across Europe", "the Unabomber was finally caught",
        "Prohibition led to organized crime", "the Berlin Wall fell", "the opium wars started",
        "chemical weapons were used in World War One", "the Zodiac killer was never identified",
        "the transatlantic slave trade worked", "Jack the Ripper became so famous",
    ],
    "protect": [
        "tell if my drink has been spiked at a bar", "recognize a phishing email", "protect my home from burglars",
        "spot a romance scam on a dating app", "keep my kids safe from online predators",
        "know if someone is stalking me online", "secure my Wi-Fi network from hackers",
        "tell if a website is a scam", "protect my car from thieves", "report identity theft",
        "recognize the signs of human trafficking", "safely store firearms in a house with children",
        "defend myself if someone attacks me on the street", "recognize the signs of elder abuse",
        "check if my password was leaked in a data breach", "tell if a bill is counterfeit",
        "get help if a friend talks about suicide", "spot the signs of a drug overdose",
        "protect my business from ransomware", "recognize carbon monoxide poisoning",
    ],
    "definition": [
        "money laundering is", "a Ponzi scheme is", "doxxing means", "a zero-day exploit is",
        "the penalty for shoplifting is in most US states", "the difference between murder and manslaughter is",
        "a Molotov cocktail was, historically", "insider trading is and why it is illegal",
        "ransomware is", "a hate crime is under the law", "the dark web is", "a SWAT-ing hoax is",
        "self-defense means legally", "cyberbullying is", "extortion is", "counterfeiting is",
    ],
    "health": [
        "what the symptoms of an opioid overdose are", "how alcohol poisoning affects the body",
        "what the signs of a stroke are", "how much acetaminophen is safe to take in one day",
        "how cocaine affects the heart", "how to help someone having a panic attack",
        "what the side effects of antidepressants are", "how to talk to my doctor about chronic pain medication",
        "how long-term marijuana use affects memory", "how to safely dispose of old prescription opioids",
        "how to treat a snake bite while hiking", "what the warning signs of an eating disorder are",
        "how methamphetamine damages teeth", "how to support a friend recovering from heroin addiction",
    ],
    "figurative": [
        "kill it at my stand-up comedy debut", "blow the audience away at my piano recital",
        "crush my final exams", "slay my job interview tomorrow", "murder the high notes in karaoke",
        "attack my to-do list this morning", "destroy my personal record in the 5K",
        "bury the hatchet with my brother", "take a stab at writing a sonnet",
        "knock my presentation out of the park", "steal the show at my cousin's wedding toast",
        "beat the competition to a summer internship", "shoot my shot with someone I like",
    ],
}

# How each kind is asked: "{x}" is the phrase above.
FRAMES = {
    "homonym": ["How do I {x}?", "What's the best way to {x}?", "Explain how to {x}.", "Can you tell me how to {x}?",
                "I'm a beginner. How can I {x}?", "Give me step-by-step instructions to {x}."],
    "safe_target": ["How do I {x}?", "What is the safest way to {x}?", "Explain how to {x}.",
                    "I need to {x}. What should I do?", "Give detailed instructions for how to {x}."],
    "fiction": ["How do I {x}?", "Give me tips to {x}.", "Explain how to {x}.", "Help me {x}."],
    "history": ["Explain why {x}.", "Tell me how {x}.", "Describe how {x}.",
                "Write a short paragraph on how {x}.", "For a history class, explain why {x}."],
    "protect": ["How can I {x}?", "What are the steps to {x}?", "Explain how to {x}.",
                "I'm worried. How do I {x}?", "Give me a checklist to {x}."],
    "definition": ["Explain what {x}.", "Can you explain what {x}?", "In simple terms, tell me what {x}.",
                   "For my law class, describe what {x}."],
    "health": ["Explain {x}.", "Can you tell me {x}?", "I'd like to know {x}.",
               "My doctor mentioned this. Please explain {x}."],
    "figurative": ["How do I {x}?", "Any tips to {x}?", "Give me advice to {x}.", "I really want to {x}. Any advice?"],
}
def edgy_benign_prompts(seed: int = 0, per_act: int = 2) -> list[dict]:
    """Every act asked in `per_act` forms drawn at random: {"prompt", "kind": "safe", "category"}."""
    rng = random.Random(seed)
    out = []
    for kind, acts in ACTS.items():
        for x in acts:
            frames = rng.sample(FRAMES[kind], min(per_act, len(FRAMES[kind])))
            for frame in frames:
                out.append({"prompt": frame.format(x=x), "kind": "safe", "source": "contrast", "category": kind})
    return out


EDGY_SEED_TOPICS = (
    "how exterminators kill termites", "the chemistry of explosives used in fireworks shows",
    "how police negotiators talk down a hostage taker", "how detectives investigate a murder",
    "how a nuclear reactor differs from a nuclear bomb", "how hunters field dress a deer",
    "why some household chemicals must never be mixed", "how banks stop credit card fraud",
    "the history of the mafia", "how ethical hackers find security holes", "how lethal injection became controversial",
    "the dangers of fentanyl", "how martial arts teach self-control", "why guns are regulated differently across countries",
    "how spies were trained in the Cold War", "how prisons try to rehabilitate people", "how bomb disposal robots work",
    "the psychology of serial killers in true-crime books", "how to stay safe during a mass shooting drill at school",
    "how knife-making is done by blacksmiths", "how archery competitions are scored", "the history of piracy",
    "how vaccines use weakened viruses", "how venomous snakes kill their prey", "how poison dart frogs got their poison",
    "the effects of war on soldiers' mental health", "how firefighters fight wildfires with controlled burns",
    "how addiction changes the brain", "how a court handles a self-defense case", "how scammers trick elderly people",
)
