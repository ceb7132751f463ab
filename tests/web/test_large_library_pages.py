"""Pages that switch to bounded work in large libraries: the About page's sampled evaluation."""

from __future__ import annotations

import re

from web import library_facts


def test_about_says_when_the_evaluation_is_sampled(client, monkeypatch):
    whole = client.get("/about").get_data(as_text=True)
    assert 'id="evaluation-sampled"' not in whole and 'id="evaluation"' in whole
    monkeypatch.setattr(library_facts, "EVAL_SAMPLE", 30)
    page = client.get("/about").get_data(as_text=True)
    said = re.search(r"random sample of (\d+) of the (\d+) labelled photos", page)
    labelled = re.search(r"Each of the (\d+) labelled photos", whole).group(1)
    assert int(labelled) > 30
    assert said and said.group(1) == "30" and said.group(2) == labelled
    assert "Each of the 30 labelled photos" in page

