"""`accelerate launch stall_at_step.py RECIPE STEP FLAG`: train RECIPE, and after optimizer step STEP
stop every rank (rank 0 writes FLAG first), so a test can SIGKILL the job at a known point."""

import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from lightalign.training import load_recipe


class StallAt(TrainerCallback):
    def __init__(self, step: int, flag: Path):
        self.step, self.flag = step, flag

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            if state.is_world_process_zero:
                self.flag.write_text(str(self.step))
            time.sleep(3600)


if __name__ == "__main__":
    recipe, step, flag = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    load_recipe(recipe).train(callbacks=[StallAt(step, flag)])
