"""Example analyzer plug-in: sensationalist captions tend to shout (capitals, "!!!").

A weak hint, so it reports a low confidence and a half weight; it exists to show the plug-in
interface, not to judge posts on its own.
"""

from __future__ import annotations

from trustcard.analysis.content import PostContent
from trustcard.analysis.signals import Signal

MIN_LETTERS = 20


class ShoutingCaption:
    name = "shouting"
    version = "0.1.0"
    weight = 0.5

    def analyze(self, content: PostContent) -> Signal:
        letters = [ch for ch in content.caption if ch.isalpha()]
        if len(letters) < MIN_LETTERS:
            return Signal.unavailable(self.name, f"caption shorter than {MIN_LETTERS} letters")
        upper = sum(1 for ch in letters if ch.isupper()) / len(letters)
        exclamations = content.caption.count("!")
        score = min(1.0, upper + 0.05 * exclamations)
        return Signal(
            name=self.name,
            score=round(score, 3),
            confidence=0.2,
            evidence=[f"{upper:.0%} of letters in capitals, {exclamations} exclamation marks"],
        )
