"""The Hub dataset a local corpus is a copy of, recognised by content, for the cards' `datasets:` metadata."""

import shutil

from hf_models.data.sources import hub_dataset_of


def test_local_copies_of_known_corpora_name_their_hub_dataset(shared_data, tmp_path):
    assert hub_dataset_of(shared_data / "tinyshakespeare.txt") == "karpathy/tiny_shakespeare"
    assert hub_dataset_of(shared_data / "wikitext-2" / "test.txt") == "Salesforce/wikitext"
    assert hub_dataset_of(shared_data / "mnist") == "ylecun/mnist"
    copy = tmp_path / "renamed.txt"  # recognised by content, not by name
    shutil.copyfile(shared_data / "tinyshakespeare.txt", copy)
    assert hub_dataset_of(copy) == "karpathy/tiny_shakespeare"
    copy.write_text(copy.read_text() + "one more line\n")  # any other text is not that dataset
    assert hub_dataset_of(copy) is None
    assert hub_dataset_of(tmp_path / "missing.txt") is None
    assert hub_dataset_of("some-org/some-dataset") is None
