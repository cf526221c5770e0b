"""Rewordings of a prompt for the rephrasing-robustness measure of `lightalign eval` (and the app).

A rewriter is a named callable `(prompt, rng) -> str | None` (None: the rule does not apply). The
built-in rules (`RULES`) are plain English rewrites made with regexes and a little morphology, no
model: they keep the request's meaning, entity names, numbers, and any sentence around the question
(such as a trailing "Answer in one word."): only the question sentence (or, with no question, the
first sentence) is rewritten, and only `lowercase` changes letter case.

Users extend the set in the config (`robustness.rewrites`); each item is a built-in name or a dict:
    {name, template: "Hey, {prompt}"}                      # {prompt} is replaced by the prompt
    {name, pattern: <regex>, replace: <re.sub replacement>} # applies only where the pattern matches
    {name, factory: "package.module:callable", options: {...}}  # returns a callable (prompt, rng)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

import regex

from lightalign.errors import UserError
from lightalign.plugins import CALL_SECONDS, load_object, with_budget


@dataclass(frozen=True)
class Rewording:
    rule: str   # name of the rewriter that produced it
    text: str


@dataclass(frozen=True)
class Rewriter:
    """A named rule: `fn(prompt, rng)` returns the reworded prompt, or None where it does not apply."""
    name: str
    fn: Callable[[str, random.Random], "str | None"]


# ---- a little English ----------------------------------------------------------------------------

WH = {"what", "who", "whom", "whose", "which", "where", "when", "why", "how"}
BE = {"is", "are", "was", "were", "am"}
DO = {"do", "does", "did"}
MODAL = {"can", "could", "should", "would", "will", "may", "might", "must", "shall"}
AUX = BE | DO | MODAL
PRONOUNS = {"i", "you", "we", "they", "he", "she", "it", "there", "this", "that", "one", "someone", "anyone"}
DETERMINERS = {"the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this", "that", "these",
               "those", "some", "any", "each", "every", "no"}
PREPOSITIONS = {"in", "on", "at", "of", "for", "from", "to", "with", "by", "about", "into", "under", "over",
                "between", "near", "after", "before", "during", "inside", "outside"}
ARITHMETIC = {"plus", "minus", "times", "divided", "by", "over", "+", "-", "*", "/", "x", "and"}
REQUEST_VERBS = {"tell", "name", "explain", "write", "give", "list", "describe", "show", "help", "find", "make",
                 "create", "translate", "summarize", "summarise", "compare", "calculate", "compute", "define",
                 "suggest", "provide", "generate", "say", "recommend", "draft", "rewrite", "classify", "identify",
                 "solve", "answer", "convert", "count", "outline", "check", "fix", "teach", "share", "state"}
# sentence starters whose capital letter is only the sentence's: safe to lowercase inside a new sentence
STARTERS = WH | AUX | (PRONOUNS - {"i"}) | DETERMINERS | PREPOSITIONS | REQUEST_VERBS | {"please", "if", "let", "as"}
IRREGULAR_PAST = {"be": "was", "have": "had", "do": "did", "go": "went", "say": "said", "make": "made",
                  "get": "got", "know": "knew", "think": "thought", "take": "took", "see": "saw", "come": "came",
                  "give": "gave", "find": "found", "tell": "told", "become": "became", "leave": "left",
                  "feel": "felt", "bring": "brought", "begin": "began", "keep": "kept", "hold": "held",
                  "write": "wrote", "stand": "stood", "hear": "heard", "let": "let", "mean": "meant",
                  "set": "set", "meet": "met", "run": "ran", "pay": "paid", "sit": "sat", "speak": "spoke",
                  "lie": "lay", "lead": "led", "read": "read", "grow": "grew", "lose": "lost", "fall": "fell",
                  "send": "sent", "build": "built", "win": "won", "eat": "ate", "buy": "bought", "put": "put",
                  "sell": "sold", "teach": "taught", "catch": "caught", "drive": "drove", "fly": "flew",
                  "sing": "sang", "swim": "swam", "draw": "drew", "break": "broke", "choose": "chose",
                  "wear": "wore", "forget": "forgot", "steal": "stole", "hide": "hid", "cut": "cut",
                  "hit": "hit", "sleep": "slept", "spend": "spent", "understand": "understood"}
VOWELS = set("aeiou")


def third_person(verb: str) -> str:
    """'live' -> 'lives', 'have' -> 'has', 'go' -> 'goes', 'fly' -> 'flies'."""
    low = verb.lower()
    if low in ("have", "do", "go", "be"):
        return {"have": "has", "do": "does", "go": "goes", "be": "is"}[low]
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in VOWELS:
        return verb[:-1] + "ies"
    return verb + "s"


def past(verb: str) -> str:
    """'live' -> 'lived', 'go' -> 'went', 'stop' -> 'stopped', 'carry' -> 'carried'."""
    low = verb.lower()
    if low in IRREGULAR_PAST:
        return IRREGULAR_PAST[low]
    if low.endswith("e"):
        return verb + "d"
    if low.endswith("y") and len(low) > 1 and low[-2] not in VOWELS:
        return verb[:-1] + "ied"
    if len(low) <= 4 and len(low) >= 3 and low[-1] not in VOWELS | set("wxy") and low[-2] in VOWELS \
            and low[-3] not in VOWELS:
        return verb + verb[-1] + "ed"
    return verb + "ed"


def _bare(token: str) -> str:
    return token.lower().strip(",;:")


def decap(text: str) -> str:
    """Lowercase the first letter when the first word is a common sentence starter (never a name)."""
    first = text.split(" ", 1)[0]
    if first and _bare(first) in STARTERS and first[:1].isupper() and first[1:] == first[1:].lower():
        return text[:1].lower() + text[1:]
    return text


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _noun_phrase(toks: list[str], i: int) -> int | None:
    """End index of a subject noun phrase starting at toks[i], or None when none is recognised:
    a pronoun, a run of capitalised words (a name), a number expression, or a determiner and one word
    (or a name), each optionally followed by "of" and another noun phrase."""
    if i >= len(toks):
        return None
    t, low = toks[i], _bare(toks[i])
    if low in PRONOUNS:
        return i + 1
    if any(c.isdigit() for c in t):
        j = i
        while j < len(toks) and (any(c.isdigit() for c in toks[j]) or _bare(toks[j]) in ARITHMETIC):
            j += 1
        return j
    if low in DETERMINERS:
        j = i + 1
        if j >= len(toks) or _bare(toks[j]) in AUX:
            return None
        if toks[j][:1].isupper():
            while j < len(toks) and toks[j][:1].isupper():
                j += 1
        else:
            j += 1
    elif t[:1].isupper() and low not in STARTERS:
        j = i
        while j < len(toks) and toks[j][:1].isupper() and _bare(toks[j]) not in STARTERS:
            j += 1
    else:
        return None
    if toks[j - 1].endswith(("'s", "’s")) and j < len(toks):  # "Alice's brother"
        j += 1
    if j < len(toks) - 1 and toks[j].lower() == "of":
        end = _noun_phrase(toks, j + 1)
        if end is not None:
            j = end
    return j


def embedded(question: str) -> str | None:
    """The question as an embedded clause: "What is the capital of France?" -> "what the capital of
    France is"; "Where does Alice live?" -> "where Alice lives"; "How do I X?" -> "how to X"; "Is it
    safe?" -> "whether it is safe". None when the question is not parsed."""
    toks = question.strip().rstrip("?").split()
    if len(toks) < 2 or not (question.strip().endswith("?") or _questionlike(question)):
        return None
    i = 0
    if _bare(toks[0]) in PREPOSITIONS and len(toks) > 1 and _bare(toks[1]) in WH:  # "In which town ..."
        i = 1
    if _bare(toks[i]) in WH:
        j = i + 1  # the wh phrase: "which town", "how many legs"
        while j < len(toks) and j <= i + 3 and _bare(toks[j]) not in AUX:
            j += 1
        if (j >= len(toks) or _bare(toks[j]) not in AUX) and i == 0 and _bare(toks[0]) in ("who", "what") \
                and toks[1].isalpha() and toks[1].islower():
            return decap(" ".join(toks))  # the wh word is the subject: "who wrote Hamlet"
        if j >= len(toks) - 1 or _bare(toks[j]) not in AUX:  # "What is?", "Which of the big red houses ...": not parsed
            return None
        wh = [decap(toks[0])] + toks[1:j]
        aux, rest = toks[j], toks[j + 1:]
        return _embed_wh(wh, aux, rest)
    if _bare(toks[0]) in AUX:
        aux, rest = toks[0].lower(), toks[1:]
        end = _noun_phrase(rest, 0)
        if end is None or end >= len(rest) or _bare(rest[0]) == "you":
            return None
        subj, pred = rest[:end], rest[end:]
        if aux in DO:
            if not pred[0].isalpha() or not pred[0].islower():
                return None
            verb = {"does": third_person, "did": past}.get(aux, lambda v: v)(pred[0])
            return " ".join(["whether", *subj, verb, *pred[1:]])
        return " ".join(["whether", *subj, aux, *pred])
    return None


def _embed_wh(wh: list[str], aux_tok: str, rest: list[str]) -> str | None:
    aux = aux_tok.lower()
    if aux in BE:
        first = _bare(rest[0])
        if first in PREPOSITIONS or (first.endswith("ing") and len(first) > 4) or first in ("there", "not"):
            return " ".join([*wh, aux, *rest])  # "who is coming", "what is in the box"
        end = _noun_phrase(rest, 0)
        adverbial = len(wh) == 1 and _bare(wh[0]) in ("why", "where", "when", "how")
        if end is not None and end < len(rest) and (adverbial or _bare(rest[end]).endswith("ing")):
            return " ".join([*wh, *rest[:end], aux, *rest[end:]])  # "why the sky is blue", "what X is doing"
        return " ".join([*wh, *rest, aux])  # "what the capital of France is"
    how_to = " ".join(wh).lower() == "how" and aux in {"do", "can", "could", "should", "would"} \
        and _bare(rest[0]) in ("i", "we", "one") and len(rest) > 1
    if how_to:
        return " ".join(["how to", *rest[1:]])
    end = _noun_phrase(rest, 0)
    if end is None:
        return None
    subj, pred = rest[:end], rest[end:]
    if aux in DO:
        if not pred or not pred[0].isalpha() or not pred[0].islower():
            return None
        plural = len(subj) == 1 and _bare(subj[0]) in ("i", "you", "we", "they")
        verb = pred[0] if aux == "do" or (aux == "does" and plural) else \
            third_person(pred[0]) if aux == "does" else past(pred[0])
        return " ".join([*wh, *subj, verb, *pred[1:]])
    return " ".join([*wh, *subj, aux, *pred])


# ---- where the rewrite goes ----------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split(prompt: str) -> tuple[str, str, str, bool]:
    """(head, main, tail, is_question): main is the first sentence ending in '?', else the first
    sentence; head and tail are the sentences around it, kept as they are."""
    sentences = [s for s in _SENTENCE.split(prompt.strip()) if s]
    if not sentences:
        return "", "", "", False
    q = next((k for k, s in enumerate(sentences) if s.endswith("?")), None)
    if q is None:  # a question written without its mark: "what is the capital of X"
        q = next((k for k, s in enumerate(sentences) if _questionlike(s)), None)
    # no question: the first request ("Hello. Write a poem."), else the first sentence
    k = q if q is not None else next((k for k, s in enumerate(sentences) if _bare(s.split()[0]) in REQUEST_VERBS), 0)
    return " ".join(sentences[:k]), sentences[k], " ".join(sentences[k + 1:]), q is not None


def _questionlike(sentence: str) -> bool:
    toks = [_bare(t) for t in sentence.split()[:2]]
    return len(toks) == 2 and (toks[0] in WH and toks[1] in AUX | {"many", "much", "long", "old"}
                               or toks[0] in ("can", "could", "would", "will") and toks[1] == "you")


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def _request(main: str) -> str | None:
    """A request in the imperative without its final punctuation: "Can you explain X?" -> "explain X",
    "Write a poem." -> "write a poem"; None when main is not a request."""
    toks = main.split()
    if len(toks) >= 3 and _bare(toks[0]) in ("can", "could", "would", "will") and _bare(toks[1]) == "you":
        return re.sub(r"^please\s+", "", " ".join(toks[2:]).rstrip("?.!").strip(), flags=re.I)
    if toks and _bare(toks[0]) in REQUEST_VERBS and not main.endswith("?"):
        return decap(main).rstrip(".!").strip()
    return None


def _pick(rng: random.Random, options: list[str]) -> str:
    return options[rng.randrange(len(options))]


# ---- the built-in rules --------------------------------------------------------------------------

def polite(prompt: str, rng: random.Random) -> str | None:
    head, main, tail, _ = split(prompt)
    if not main or re.match(r"(?:please|(?:could|would|can|will) you please)\b", main, re.I):
        return None
    req, emb = _request(main), embedded(main)
    if req:
        new = _pick(rng, [f"Please {req}.", f"Could you please {req}?"])
    elif emb:
        verb = "explain" if emb.startswith("how to") else "tell me"
        new = _pick(rng, [f"Could you please {verb} {emb}?", f"Please {verb} {emb}."])
    else:
        new = f"Please help me with this: {main}"
    return _join(head, new, tail)


def greeting(prompt: str, rng: random.Random) -> str | None:
    if not prompt.strip():
        return None
    opener = _pick(rng, ["Hi! Quick question:", "Hello there!", "Hey, quick one:", "Hi there."])
    closer = _pick(rng, ["Thanks.", "Thanks a lot!", "Thank you."])
    body = prompt.strip()
    return f"{opener} {body}{'' if body[-1] in '.!?' else '.'} {closer}"


def indirect(prompt: str, rng: random.Random) -> str | None:
    head, main, tail, is_q = split(prompt)
    if not main:
        return None
    req, emb = _request(main), embedded(main)
    if emb:
        if emb.startswith("how to"):
            new = f"I want to know {emb}."
        else:
            new = _pick(rng, [f"I'd like to know {emb}.", f"Do you know {emb}?", f"I wonder {emb}."])
    elif req:
        new = f"I'd like you to {req}."
    elif is_q:
        new = f"I have a question: {main}"
    else:
        return None
    return _join(head, new, tail)


def imperative(prompt: str, rng: random.Random) -> str | None:
    head, main, tail, is_q = split(prompt)
    if not is_q:
        return None
    req, emb = _request(main), embedded(main)
    if req:
        new = cap(req) + "."
    elif emb:
        new = f"Explain {emb}." if emb.startswith("how to") else _pick(rng, [f"Tell me {emb}.",
                                                                            f"Let me know {emb}."])
    else:
        new = f"Answer this question: {main}"
    return _join(head, new, tail)


def first_person(prompt: str, rng: random.Random) -> str | None:
    head, main, tail, is_q = split(prompt)
    if not main:
        return None
    req, emb = _request(main), embedded(main)
    if emb:
        new = _pick(rng, [f"I need to find out {emb}.", f"I'm trying to figure out {emb}."])
    elif req:
        new = f"I need you to {req}."
    elif is_q:
        new = f"I need to find out something. {main}"
    else:
        return None
    return _join(head, new, tail)


def context(prompt: str, rng: random.Random) -> str | None:
    if not prompt.strip():
        return None
    lead = _pick(rng, ["My friend asked me this and I wasn't sure.", "I was discussing this with a colleague.",
                       "This came up at dinner yesterday."])
    return f"{lead} {prompt.strip()}"


def lowercase(prompt: str, rng: random.Random) -> str | None:
    """Lowercase the head and question, dropping the question mark when it ends the prompt; the
    sentences after the question (an instruction) are kept exact."""
    head, main, tail, is_q = split(prompt)
    if not main:
        return None
    if is_q and not tail:
        main = main.rstrip("?").rstrip()
    return _join(_join(head, main).lower(), tail) or None


def typo(prompt: str, rng: random.Random) -> str | None:
    """Swap two adjacent inner letters of one lowercase word of >= 5 letters in the head or question
    (never the tail, so an instruction stays exact; never a capitalised word or a number)."""
    head, main, tail, _ = split(prompt)
    body = _join(head, main)
    spots = [(m.start(), m.end()) for m in re.finditer(r"\b[a-z]{5,}\b", body)]
    if not spots:
        return None
    start, end = spots[rng.randrange(len(spots))]
    word = body[start:end]
    pairs = [k for k in range(1, len(word) - 2) if word[k] != word[k + 1]]
    if not pairs:
        return None
    k = pairs[rng.randrange(len(pairs))]
    word = word[:k] + word[k + 1] + word[k] + word[k + 2:]
    return _join(body[:start] + word + body[end:], tail)


RULES: dict[str, Callable[[str, random.Random], "str | None"]] = {
    "polite": polite, "greeting": greeting, "indirect": indirect, "imperative": imperative,
    "first_person": first_person, "context": context, "lowercase": lowercase, "typo": typo}


# ---- user specs ----------------------------------------------------------------------------------

def _template(template: str):
    return lambda prompt, rng: template.replace("{prompt}", prompt.strip())


# A user pattern runs in the `regex` engine (re's syntax) with a timeout: a pattern that backtracks
# catastrophically, such as (a+)+$, would otherwise hang the run on one prompt; it fails with one line instead.
PATTERN_SECONDS = 1.0


def _regex(pattern, repl: str, where: str):
    def apply(prompt, rng):
        try:
            out, n = pattern.subn(repl, prompt, timeout=PATTERN_SECONDS)
        except TimeoutError:
            raise UserError(f"{where}: {pattern.pattern!r} took over {PATTERN_SECONDS:g} s on a "
                            f"{len(prompt)}-character prompt (nested repeats such as (a+)+ backtrack "
                            "exponentially); simplify the pattern") from None
        except (regex.error, IndexError) as e:  # a bad group reference in `replace`
            raise UserError(f"{where}: replace {repl!r}: {e}") from None
        return out if n else None
    return apply


def _budgeted(fn, where: str):
    """A user rewriter (factory) that must return within plugins.CALL_SECONDS per prompt."""
    def apply(prompt, rng):
        return with_budget(fn, (prompt, rng), CALL_SECONDS, where)
    return apply


def check_specs(specs: list | None, where: str = "robustness.rewrites") -> None:
    """Check rewrite specs without importing any factory; ValueError naming `where[i]` and the field."""
    if specs is None:
        return
    if not isinstance(specs, list) or not specs:
        raise ValueError(f"{where} must be a non-empty list of rule names or {{name, template | pattern | "
                         f"factory}} dicts")
    names: set[str] = set()
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if isinstance(spec, str):
            if spec not in RULES:
                raise ValueError(f"{at}: unknown rule {spec!r}; built-in rules: {', '.join(RULES)}")
            name = spec
        elif isinstance(spec, dict):
            name = spec.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{at}.name is required (a short name for the rule)")
            kinds = [k for k in ("template", "pattern", "factory") if k in spec]
            if len(kinds) != 1:
                raise ValueError(f"{at}: give exactly one of template, pattern, factory (got {kinds or 'none'})")
            allowed = {"name", kinds[0], *({"pattern": ["replace"], "factory": ["options"]}.get(kinds[0], []))}
            extra = sorted(set(spec) - allowed)
            if extra:
                raise ValueError(f"{at}: unknown field(s) {extra} for a {kinds[0]} rule")
            _check_fields(spec, kinds[0], at)
        else:
            raise ValueError(f"{at}: a rule name or a dict, got {type(spec).__name__}")
        if name in names:
            raise ValueError(f"{at}.name: duplicate rule name {name!r}")
        names.add(name)


def _check_fields(spec: dict, kind: str, at: str) -> None:
    if kind == "template":
        if not isinstance(spec["template"], str) or "{prompt}" not in spec["template"]:
            raise ValueError(f"{at}.template must be a string containing {{prompt}}")
    elif kind == "pattern":
        if not isinstance(spec["pattern"], str) or not isinstance(spec.get("replace"), str):
            raise ValueError(f"{at}.pattern and {at}.replace must both be strings")
        try:
            regex.compile(spec["pattern"])
        except regex.error as e:
            raise ValueError(f"{at}.pattern: not a valid regular expression ({e})") from None
    elif not isinstance(spec["factory"], str) or not isinstance(spec.get("options", {}), dict):
        raise ValueError(f"{at}.factory must be \"package.module:callable\" and {at}.options a mapping")


def build_rewriters(specs: list | None = None, where: str = "robustness.rewrites") -> list[Rewriter]:
    """The rewriters a config names (None: every built-in rule); UserError naming the bad item."""
    try:
        check_specs(specs, where)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = []
    for i, spec in enumerate(specs if specs is not None else list(RULES)):
        if isinstance(spec, str):
            out.append(Rewriter(spec, RULES[spec]))
        elif "template" in spec:
            out.append(Rewriter(spec["name"], _template(spec["template"])))
        elif "pattern" in spec:
            out.append(Rewriter(spec["name"], _regex(regex.compile(spec["pattern"]), spec["replace"],
                                                     f"{where}[{i}].pattern")))
        else:
            at = f"{where}[{i}].factory"
            factory = load_object(spec["factory"], at)
            if not callable(factory):
                raise UserError(f"{at}: {spec['factory']!r} is not callable")
            try:
                fn = with_budget(lambda: factory(**spec.get("options", {})), (), CALL_SECONDS, at)
            except TypeError as e:
                raise UserError(f"{at}: {spec['factory']!r} does not accept options "
                                f"{sorted(spec.get('options', {}))}: {e}") from None
            if not callable(fn):
                raise UserError(f"{at}: {spec['factory']!r} returned {type(fn).__name__}, not a callable "
                                "(prompt, rng) -> str | None")
            out.append(Rewriter(spec["name"], _budgeted(fn, f"{where}[{i}].factory")))
    return out


def reword(prompt: str, rewriters: list, seed: int = 0) -> list[Rewording]:
    """Every rewording the rewriters give for `prompt`, in rewriter order; a rule that does not apply
    (None or blank) and a text equal to the original or an earlier rewording are dropped. Each rule
    draws from its own generator seeded by (seed, rule, prompt), so results do not depend on which
    other rules run."""
    seen = {prompt.strip()}
    out = []
    for r in rewriters:
        text = r.fn(prompt, random.Random(f"{seed}\x00{r.name}\x00{prompt}"))
        if not isinstance(text, str) or not text.strip() or text.strip() in seen:
            continue
        seen.add(text.strip())
        out.append(Rewording(r.name, text.strip()))
    return out
