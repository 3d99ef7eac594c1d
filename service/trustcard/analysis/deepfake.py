"""The deepfake stage's slot: empty until a plug-in named "deepfake" provides a model."""

from __future__ import annotations

from trustcard.analysis.content import PostContent
from trustcard.analysis.signals import Signal

DEEPFAKE = "deepfake"


class DeepfakeSlot:
    """Says plainly that no deepfake model is installed, instead of guessing a score."""

    name = DEEPFAKE
    version = "none"

    def analyze(self, content: PostContent) -> Signal:
        return Signal.unavailable(
            self.name,
            "no model installed: install a plug-in providing the 'deepfake' analyzer "
            "(entry point group trustcard.analyzers)",
        )
