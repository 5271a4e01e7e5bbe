"""The policies a compile is run under: light pydantic models, so the CLI derives its option
defaults from them without importing the compiler."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, Field

__all__ = ["OOS_PRIOR", "WRONG_TARGET", "AutoFaqPolicy", "ReviewPolicy", "RouterPolicy"]

WRONG_TARGET: Final = 0.02
"""Highest expected share of wrong answers among those served, by default."""
OOS_PRIOR: Final = 0.05
"""Share of traffic assumed to be out of scope when the threshold is tuned."""


class RouterPolicy(BaseModel):
    """The risk a compile's router is tuned to take (``ragc compile --wrong-target``,
    ``--oos-share``)."""

    wrong_target: float = Field(default=WRONG_TARGET, gt=0.0, lt=1.0)
    """Highest expected share of wrong answers among the answers served."""
    oos_share: float = Field(default=OOS_PRIOR, ge=0.0, lt=1.0)
    """Share of the traffic assumed to be about something the knowledge does not cover."""
    similarity_gate: bool = False
    """Let tuning also require a minimum similarity between a question's vector and its best
    class's centroid (``--similarity-gate``). It pays where many questions are near misses of
    the knowledge; held-out paraphrases sit closer to their entries than real questions do, so a
    gate tuned on them can turn real phrasings down, and it is off unless asked for."""


class ReviewPolicy(BaseModel):
    """How generated answers are approved."""

    mode: Literal["auto", "sample", "full"] = "auto"
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    """Minimum verification score for automatic approval."""
    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of auto-approvable answers held for a person in ``sample`` mode."""


class AutoFaqPolicy(BaseModel):
    """Which logged misses a compile drafts answers for."""

    min_asked: int = Field(default=2, ge=0, description="Times a miss was asked (0: no drafts).")
    limit: int = Field(default=20, ge=0, le=1000, description="Most frequent misses drafted.")
