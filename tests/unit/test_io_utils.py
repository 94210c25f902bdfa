"""The README-block writer every report shares: it rewrites only between its markers, or refuses."""

import pytest

from cofee.utils.errors import InputFileError
from cofee.utils.io import check_marked_block, replace_marked_block


def test_the_block_between_the_markers_is_replaced_and_the_rest_kept(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("head\n<!-- t:begin -->\nold\n<!-- t:end -->\ntail\n<!-- u:begin -->\nx\n<!-- u:end -->\n")
    assert replace_marked_block(doc, "t", "| new |") == "old"  # what it replaced
    assert (
        doc.read_text()
        == "head\n<!-- t:begin -->\n| new |\n<!-- t:end -->\ntail\n<!-- u:begin -->\nx\n<!-- u:end -->\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no markers\n", "no '<!-- t:begin -->' marker"),
        ("<!-- t:begin -->\nopen only\n", "no '<!-- t:end -->' marker"),
        ("<!-- t:end -->\n<!-- t:begin -->\n", "'t:end' marker comes before 't:begin'"),
    ],
)
def test_a_missing_or_misplaced_marker_names_the_file_and_writes_nothing(tmp_path, text, message):
    doc = tmp_path / "README.md"
    doc.write_text(text)
    for call in (lambda: check_marked_block(doc, "t"), lambda: replace_marked_block(doc, "t", "new")):
        with pytest.raises(InputFileError, match=f"^{doc}: .*") as info:
            call()
        assert message in str(info.value)
    assert doc.read_text() == text


def test_a_missing_document_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        replace_marked_block(tmp_path / "absent.md", "t", "new")
    assert not (tmp_path / "absent.md").exists()
