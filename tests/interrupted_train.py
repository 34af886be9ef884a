"""``lopt-kit train`` that stops itself after step ``$STOP_AT`` as Ctrl-C would (the trainer writes its
checkpoint, then the process exits): the first half of a resume test that runs under ``accelerate launch``."""
import os
import sys

from lopt_core.cli import main
from lopt_core.training.trainer import Trainer

STOP_AT = int(os.environ["STOP_AT"])
_init = Trainer.__init__


def _stopping_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)

    def stop(trainer, record):
        if trainer.step == STOP_AT:
            raise KeyboardInterrupt

    self.callbacks = (*self.callbacks, stop)


Trainer.__init__ = _stopping_init
sys.exit(main(sys.argv[1:]))
