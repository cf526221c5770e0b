"""Streamed correction: the Aligner revises an answer one sentence at a time while it is generated.

    for text in aligner.stream(question, upstream_chunks):                    # mode="sentence"
        print(text, end="")
    for text in aligner.stream(question, first_chunks, mode="guided", continue_from=fn):
        ...                                                                    # fn(prefix) -> chunks

Modes (the same three in `lightalign serve`, the app and eval's `aligner_mode:`):
- "whole": wait for the whole answer, correct it once (the Aligner's usual job), send it.
- "sentence": each finished sentence of the upstream's own answer is revised given the question and
  the corrected text sent so far (Stream Aligner's input: question, answer prefix, last sentence),
  then sent. A sentence the Aligner keeps is sent as the upstream wrote it, byte for byte, so an
  answer with nothing to correct streams unchanged. When a revision is a refusal the upstream is
  closed (its request cancelled) and the stream ends.
- "guided" (Stream Aligner's loop): as "sentence", but once a sentence is changed the upstream is
  cancelled and asked to continue from the corrected prefix (`continue_from(prefix)`), so what
  follows builds on the correction, not on the text it replaced. While nothing changes, the
  upstream's stream is read on (greedy continuation of an unchanged prefix is the same text), so
  guided costs nothing over "sentence" until a correction happens. At most `max_rounds` restarts,
  then it goes on as "sentence".

Cancelling an upstream = closing the iterator it gave (`close()` on a generator: its `finally` runs),
which is what the serve upstreams and the app's local generator implement.
The splitting rules are in lightalign.aligner.sentences.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

from lightalign.aligner.sentences import SentenceBuffer

MODES = ("whole", "sentence", "guided")
MAX_ROUNDS = 16  # Stream Aligner's number of rounds


def check_mode(mode: str) -> str:
    from lightalign.errors import UserError

    if mode not in MODES:
        raise UserError(f"aligner mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _after_words(text: str, n: int) -> str | None:
    """`text` after its first `n` words, or None when it has fewer."""
    import re

    if n == 0:
        return text
    for i, m in enumerate(re.finditer(r"\S+", text), 1):
        if i == n:
            return text[m.end():]
    return None


def correct_sentences(aligner, items: Sequence[tuple[str, str, str]], batch_size: int = 16) -> list:
    """(question, corrected answer so far, last sentence) -> Correction of the sentence.

    With a sentence template (an Aligner trained with sentence rows) the prompt is Stream Aligner's.
    Without one, the whole-answer template corrects prefix + sentence and the revision is what
    follows the prefix in the correction (a correction that rewrites the prefix itself yields its
    whole text, since what was sent cannot be taken back); an Aligner that only drops the sentence
    gives an empty, changed revision."""
    from lightalign.aligner.model import Correction

    items = list(items)
    if aligner.sentence_template is None:
        whole = aligner.correct_batch([(q, prefix + sentence) for q, prefix, sentence in items], batch_size,
                                      partial=True)
        out = []
        for (q, prefix, sentence), c in zip(items, whole):
            if c.fallback or not c.changed:
                out.append(Correction(sentence, False, c.fallback, sentence, gate_score=c.gate_score,
                                      gate_passed=c.gate_passed))
                continue
            rest = _after_words(c.text, len(prefix.split())) if _same(" ".join(c.text.split()[:len(prefix.split())]),
                                                                       prefix) else None
            revision = (rest if rest is not None else c.text).strip()
            out.append(Correction(revision, not _same(revision, sentence), None, sentence))
        return out
    return _decode_sentences(aligner, items, batch_size)


def _decode_sentences(aligner, items, batch_size: int) -> list:
    """The sentence template through the Aligner's engine, with its guards and its gate (on the answer so
    far, against the partial threshold); one bad item never fails the others."""
    from lightalign.aligner.model import Correction

    aligner.engine.start()
    tpl, tok = aligner.sentence_template, aligner.tokenizer
    max_pos = aligner._max_positions()
    prepared, results = [], [None] * len(items)
    if aligner.gate is not None:  # a sentence the gate passes is sent as it is, undecoded
        from lightalign.aligner.inspector import screen

        screened = [(None, None, None, sentence) for _, _, sentence in items]
        screen(aligner.gate, [(q, prefix + sentence) for q, prefix, sentence in items], screened, batch_size,
               Correction, partial=True)
        results = [c if isinstance(c, Correction) else None for c in screened]
    for i, (question, prefix, sentence) in enumerate(items):
        if results[i] is not None:
            continue
        text = sentence.strip()
        prompt = tpl.encode(tok, question, text, prefix.strip())
        limit = aligner.max_new_tokens
        if max_pos and aligner.architecture == "causal":
            limit = min(limit, max_pos - len(prompt))
        if max_pos and (limit < 1 or (aligner.architecture == "seq2seq" and len(prompt) > max_pos)):
            results[i] = Correction(sentence, False, "too_long", sentence)
            continue
        prepared.append((i, (prompt, aligner.answer_ids(text), limit, text)))
    for start in range(0, len(prepared), max(1, batch_size)):
        chunk = prepared[start:start + max(1, batch_size)]
        try:
            done = aligner._decode([p for _, p in chunk], batch_size)
        except Exception:  # noqa: BLE001 - retry one by one below
            done = []
            for _, p in chunk:
                try:
                    done.extend(aligner._decode([p], 1))
                except Exception as e:  # noqa: BLE001 - a record's failure becomes a flagged record
                    done.append(Correction(p[3], False, f"error: {type(e).__name__}: {e}", p[3]))
        for (i, _), c in zip(chunk, done):
            sentence = items[i][2]
            results[i] = c if c.changed else Correction(sentence, False, c.fallback, sentence)
    return results


class SentenceStreamer:
    """One streamed answer: upstream text in, the text to send out, sentence by sentence.

    `feed(chunk)` / `finish()` give the finished sentences (see SentenceBuffer), `request(piece)` the
    Aligner's input for one of them, `accept(piece, correction)` the text to send for it."""

    def __init__(self, question: str):
        self.question = question
        self.buffer = SentenceBuffer()
        self.sent = ""  # what the client has received (the corrected answer so far)
        self.original = ""  # the upstream text the sent text replaces
        self.changed = False
        self.last_changed = False
        self.refused = False  # a revision declined the request: the stream ends there
        self.fallbacks: list[str] = []

    def feed(self, chunk: str) -> list[str]:
        return self.buffer.feed(chunk)

    def finish(self) -> list[str]:
        return self.buffer.finish()

    def restart(self) -> None:
        """The upstream starts over from what was sent (guided mode): text not yet consumed is dropped."""
        self.buffer = SentenceBuffer()

    def request(self, piece: str) -> tuple[str, str, str]:
        return self.question, self.sent, piece

    def accept(self, piece: str, correction) -> str:
        from lightalign.evaluation.judge_rules import is_refusal

        if correction.fallback:
            self.fallbacks.append(correction.fallback)
        self.last_changed = bool(correction.changed)
        if not correction.changed:
            out = piece if self.sent else piece.lstrip()
        else:
            self.changed = True
            text = correction.text.strip()
            lead = piece[:len(piece) - len(piece.lstrip())] if self.sent else ""
            out = lead + text if text else ""
            self.refused = bool(text) and is_refusal(text)
        self.sent += out
        self.original += piece
        return out


def _close(iterator) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def correct_stream(aligner, question: str, chunks: Iterable[str], mode: str = "sentence",
                   continue_from: Callable[[str], Iterable[str]] | None = None,
                   max_rounds: int = MAX_ROUNDS) -> Iterator[str]:
    """The corrected answer as text pieces (concatenate them for the whole answer); see the module
    docstring. `chunks`: the upstream's streamed text; `continue_from(prefix)`: a new upstream stream
    that continues the assistant turn from `prefix` (guided mode only)."""
    check_mode(mode)
    if mode == "guided" and continue_from is None:
        from lightalign.errors import UserError

        raise UserError("guided mode needs an upstream that continues a prefix (continue_from)")
    if mode == "whole":
        yield from _whole(aligner, question, chunks)
        return
    st = SentenceStreamer(question)
    upstream = iter(chunks)
    rounds = 0
    try:
        while True:
            restart = False
            for chunk in upstream:
                for piece in st.feed(chunk):
                    out = st.accept(piece, aligner.correct_sentences([st.request(piece)])[0])
                    if out:
                        yield out
                    if st.refused:
                        return
                    if mode == "guided" and st.last_changed and rounds < max_rounds:
                        restart = True
                        break
                if restart:
                    break
            if not restart:
                for piece in st.finish():
                    out = st.accept(piece, aligner.correct_sentences([st.request(piece)])[0])
                    if out:
                        yield out
                    if st.refused:
                        return
                return
            _close(upstream)
            rounds += 1
            st.restart()
            upstream = iter(continue_from(st.sent))
    finally:
        _close(upstream)


def _whole(aligner, question: str, chunks: Iterable[str]) -> Iterator[str]:
    upstream = iter(chunks)
    try:
        answer = "".join(upstream)
    finally:
        _close(upstream)
    yield aligner.correct(question, answer).text


def correct_by_sentence(aligner, pairs: Sequence[tuple[str, str]], mode: str = "sentence", batch_size: int = 16,
                        continue_batch: Callable[[list[tuple[str, str]]], list[str]] | None = None,
                        max_rounds: int = MAX_ROUNDS) -> list[dict]:
    """What the streamed modes send, for whole answers at once (eval, benchmarks): the same sentence
    loop as `correct_stream`, run in lockstep over all pairs so each round is one batched Aligner call.
    guided: `continue_batch([(question, corrected prefix), ...])` -> the upstream's continuations (its
    whole text after the prefix), called once per round for the answers whose sentence changed.
    Returns {"text", "changed", "fallback", "refused", "restarts"} per pair."""
    from lightalign.aligner.sentences import split_sentences

    check_mode(mode)
    if mode == "whole":
        return [{"text": c.text, "changed": c.changed, "fallback": c.fallback, "refused": False, "restarts": 0}
                for c in aligner.correct_batch(list(pairs), batch_size)]
    if mode == "guided" and continue_batch is None:
        from lightalign.errors import UserError

        raise UserError("guided mode needs an upstream that continues a prefix (continue_batch)")
    states = [SentenceStreamer(q) for q, _ in pairs]
    queues = [split_sentences(a) for _, a in pairs]
    restarts = [0] * len(pairs)
    active = [i for i in range(len(pairs)) if queues[i]]
    while active:
        pieces = [queues[i].pop(0) for i in active]
        fixed = aligner.correct_sentences([states[i].request(p) for i, p in zip(active, pieces)], batch_size)
        again = []
        for i, piece, c in zip(active, pieces, fixed):
            states[i].accept(piece, c)
            if states[i].refused:
                queues[i] = []
            elif mode == "guided" and states[i].last_changed and restarts[i] < max_rounds:
                again.append(i)
        if again:
            for i, text in zip(again, continue_batch([(states[i].question, states[i].sent) for i in again])):
                restarts[i] += 1
                queues[i] = split_sentences(text)
        active = [i for i in range(len(pairs)) if queues[i]]
    return [{"text": st.sent, "changed": st.changed, "fallback": ", ".join(sorted(set(st.fallbacks))) or None,
             "refused": st.refused, "restarts": r} for st, r in zip(states, restarts)]
