"""The model card: `MODEL_CARD.md` and its charts (`card/*.png`) in a run directory.

Written when a run ends, whatever its state (ddpcifar.runs.report.Reporter.end, and
ddpcifar.runs.ending.end_run when a state is set from outside the run), and again by
`python -m ddpcifar.card RUN`. Torch- and pydantic-free: the NumPy engine's process writes it.

    facts.py     what the card says, read from the run directory's files
    markdown.py  those facts as markdown
    write.py     charts and markdown rendered in memory, then written atomically
    __main__.py  the command line
"""

from ddpcifar.card.write import CARD, IMAGES_DIR, write_card, write_card_quietly

__all__ = ["CARD", "IMAGES_DIR", "write_card", "write_card_quietly"]
