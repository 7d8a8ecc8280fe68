"""The base of every config section."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are an error, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
