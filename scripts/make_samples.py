"""Regenerate samples/: the sample corpus of snappy.testing.synth (PDFs + facts.json) and one PNG page."""
from pathlib import Path

from snappy.documents.pages import RenderOptions, load_pages
from snappy.testing.synth import write_corpus

out = Path(__file__).resolve().parent.parent / "samples"
paths, _ = write_corpus(out)
# The memo also as a scanned-looking image, so the samples cover image input.
load_pages(paths[-1], RenderOptions(dpi=110))[0].image.convert("L").save(out / "memo-scan.png", dpi=(110, 110))
print("\n".join(sorted(p.name for p in out.iterdir())))
