"""Run inside the vLLM venv: decode prompts with an Aligner's vLLM engine and print the result as JSON.

    python vllm_decode.py ALIGNER_DIR REQUEST.json   # {"prompts": [[ids]], "sources": [[ids]], "limits": [n]}
"""

import json
import sys


def main() -> None:
    from lightalign.aligner import Aligner

    aligner_dir, request = sys.argv[1], json.loads(open(sys.argv[2]).read())
    aligner = Aligner.from_pretrained(aligner_dir, engine="vllm")
    outs = aligner.engine.decode(request["prompts"], request["sources"], request["limits"])
    print("RESULT " + json.dumps([{"tokens": list(o.tokens), "finished": o.finished} for o in outs]))


if __name__ == "__main__":  # vLLM spawns its engine process
    main()
