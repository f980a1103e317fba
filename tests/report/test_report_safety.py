"""The HTML report escapes everything read from sections.json and embeds only study files."""

import json

import numpy as np
import pytest
from PIL import Image

from captum_layerinf.report import write_report

ATTACK = '"><script>alert(1)</script>'


def _study(folder, figures, key="summary"):
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "figures" / "ok.png")
    section = {
        "key": key,
        "title": f"Summary: {ATTACK}",
        "guide": ATTACK,
        "findings": [ATTACK],
        "tables": [],
        "figures": figures,
    }
    (folder / "sections.json").write_text(json.dumps([section]))


def test_section_keys_cannot_inject_markup(tmp_path):
    _study(tmp_path, ["figures/ok.png"], key=ATTACK)
    html = write_report(tmp_path).read_text()
    assert "<script>" not in html
    anchor = "___script_alert_1___script_"
    assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html
    assert html.count("data:image/png;base64,") == 1


@pytest.mark.parametrize("where", ["absolute", "parent", "link"])
def test_files_outside_the_study_folder_are_never_embedded(tmp_path, where):
    study = tmp_path / "study"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    entry = {"absolute": str(secret), "parent": "../secret.png", "link": "figures/link.png"}[where]
    _study(study, ["figures/ok.png", entry])
    (study / "figures" / "link.png").symlink_to(secret)
    with pytest.raises(ValueError, match=r"lies outside the study folder.*only files inside"):
        write_report(study)
    assert not (study / "report.html").exists()


@pytest.mark.parametrize("content", ["", "{}", '[{"key": "a"}]', "[1]"])
def test_a_damaged_sections_file_is_named(tmp_path, content):
    (tmp_path / "sections.json").write_text(content)
    with pytest.raises(
        ValueError, match=r"sections.json( is not valid JSON| must hold|: section 0 lacks)"
    ):
        write_report(tmp_path)
