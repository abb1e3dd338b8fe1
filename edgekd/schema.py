"""The base of every config model: unknown keys are refused, assignments are validated.

Each package that reads a slice of the config defines that slice next to its code
(``edgekd/distill/config.py``, ``edgekd/nas/config.py``, ``edgekd/bench/gates.py``); ``edgekd/config.py``
assembles them into the run's config.
"""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
