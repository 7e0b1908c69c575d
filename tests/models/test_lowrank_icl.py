"""LowRank ICL: the table-connectivity data (labels against brute force, reproducibility, class rates), the masks
(densities, structure), the sparse attention against the dense masked reference (outputs and gradients), the
positions at other table counts, causality, labels and the processor."""

import itertools
import random

import pytest
import torch

from hf_models import LowRankIclConfig, LowRankIclForPromptClassification, LowRankIclModel, LowRankIclProcessor
from hf_models.data.table_connectivity import connectivity_label, sample_prompt, table_connectivity
from hf_models.lowrank_icl import table_attention_mask
from hf_models.tasks.prompt_classification import PromptCollator, binary_metrics
from tests.model_specs import CONFIGS


TINY = CONFIGS / "lowrank_icl" / "tiny.json"


def tiny_config(**overrides):
    return LowRankIclConfig.from_pretrained(str(TINY), **overrides)


def brute_force_label(tables, query):
    """Connectivity through the transitive closure of the table adjacency matrix (Warshall)."""
    count = len(tables)
    reach = [[i == j or bool(set(tables[i]) & set(tables[j])) for j in range(count)] for i in range(count)]
    for k, i, j in itertools.product(range(count), repeat=3):
        reach[i][j] = reach[i][j] or (reach[i][k] and reach[k][j])
    starts = [i for i in range(count) if query[0] in tables[i]]
    goals = [j for j in range(count) if query[1] in tables[j]]
    return 1 if any(reach[i][j] for i in starts for j in goals) else -1


def test_labels_equal_brute_force():
    rng = random.Random(0)
    seen = set()
    for _ in range(600):
        num_tables, num_columns, rho = rng.choice([(3, 2, 0.5), (5, 3, 0.5), (8, 3, 0.2), (12, 2, 0.1)])
        example = sample_prompt(rng, num_tables, num_columns, rho, label=rng.choice([None, 1, -1]))
        assert (
            example["label"]
            == brute_force_label(example["tables"], example["query"])
            == connectivity_label(example["tables"], example["query"])
        )
        seen.add(example["label"])
    assert seen == {1, -1}
    assert connectivity_label([[0, 1], [2, 3]], [4, 0]) == -1  # a query column in no table
    assert connectivity_label([[0, 1], [1, 3], [5, 6]], [0, 3]) == 1  # through the shared column 1
    assert connectivity_label([[0, 1], [1, 3], [5, 6]], [0, 6]) == -1


def test_generator_is_seeded_and_prefix_stable():
    first = table_connectivity(5, 3, 0.5, num_examples=40, seed=3)
    assert first.to_list() == table_connectivity(5, 3, 0.5, num_examples=40, seed=3).to_list()
    assert first.to_list()[:15] == table_connectivity(5, 3, 0.5, num_examples=15, seed=3).to_list()
    assert first.to_list() != table_connectivity(5, 3, 0.5, num_examples=40, seed=4).to_list()
    stream = table_connectivity(5, 3, 0.5, seed=3, streaming=True)
    assert list(itertools.islice(stream, 15)) == first.to_list()[:15]
    example = first[0]
    assert len(example["tables"]) == 5 and all(len(t) == 3 for t in example["tables"])
    assert all(0 <= c < 15 for c in itertools.chain(*example["tables"], example["query"]))
    with pytest.raises(ValueError, match="edge_probability=1.5 is invalid"):
        table_connectivity(5, 3, 1.5)
    with pytest.raises(ValueError, match="num_tables=0 is invalid"):
        table_connectivity(0, 3, 0.5)


def test_class_rates_and_balanced_sampling():
    """Natural positive rates as the original's sampler gives them (about 7% at V=20, C=3, rho=0.5; 27% at V=5),
    and the balanced option gives half positives whose labels are still right."""
    natural = table_connectivity(20, 3, 0.5, num_examples=3000, seed=0)
    rate = sum(label == 1 for label in natural["label"]) / len(natural)
    assert 0.05 < rate < 0.085, rate
    rate5 = sum(label == 1 for label in table_connectivity(5, 3, 0.5, num_examples=3000, seed=0)["label"]) / 3000
    assert 0.24 < rate5 < 0.30, rate5
    balanced = table_connectivity(20, 3, 0.5, num_examples=1000, seed=0, balanced=True)
    rate = sum(label == 1 for label in balanced["label"]) / len(balanced)
    assert 0.45 < rate < 0.55, rate
    for example in balanced.select(range(200)):
        assert example["label"] == brute_force_label(example["tables"], example["query"])


def test_mask_densities_and_structure():
    local = table_attention_mask(20, 3, "local", is_causal=False)
    sparse = table_attention_mask(20, 3, "sparse", is_causal=False)
    assert local.shape == (83, 83)
    assert int(local.sum()) == 20 * 4 * 4 + 3 and round(100 * local.float().mean().item(), 1) == 4.7
    assert int(sparse.sum()) == 23 * 23 and round(100 * sparse.float().mean().item(), 2) == 7.68
    assert torch.equal(local[80:, 80:], torch.eye(3, dtype=torch.bool)) and not local[80:, :80].any()
    assert local[4:8, 4:8].all() and not local[4:8, :4].any() and not local[4:8, 8:].any()
    summary = [4 * v + 3 for v in range(20)] + [80, 81, 82]
    assert sparse[summary][:, summary].all() and int(sparse.any(1).sum()) == 23
    for kind in ("local", "sparse", "full"):
        causal = table_attention_mask(20, 3, kind, is_causal=True)
        assert torch.equal(causal, table_attention_mask(20, 3, kind, False) & torch.ones(83, 83).tril().bool())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pattern", ["table", "full"])
def test_sparse_attention_equals_masked_reference(causal, pattern):
    """Outputs and every gradient of the fast path equal the dense masked reference, at several table counts."""
    torch.manual_seed(0)
    fast = LowRankIclForPromptClassification(tiny_config(is_causal=causal, attention_pattern=pattern))
    reference = LowRankIclForPromptClassification(
        tiny_config(is_causal=causal, attention_pattern=pattern, table_attention_implementation="masked")
    )
    reference.load_state_dict(fast.state_dict())
    for num_tables in (1, 4, 9):
        features = torch.randn(3, num_tables * 4 + 3, 5)
        labels = torch.tensor([1.0, -1.0, 1.0])
        outputs = [model(features, num_tables=num_tables, labels=labels, output_hidden_states=True)
                   for model in (fast, reference)]  # fmt: skip
        for a, b in zip(outputs[0].hidden_states, outputs[1].hidden_states, strict=True):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(outputs[0].logits, outputs[1].logits, atol=2e-6, rtol=1e-5)
        for output in outputs:
            output.loss.backward()
        for (name, a), b in zip(fast.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, atol=2e-6, rtol=1e-4, msg=name)
        fast.zero_grad()
        reference.zero_grad()


def test_positions_low_rank_and_dense():
    low_rank = LowRankIclModel(tiny_config())
    dense = LowRankIclModel(tiny_config(position_embedding_type="dense", attention_pattern="full"))
    hidden = low_rank.config.hidden_size
    count = sum(p.numel() for p in low_rank.position_embeddings.parameters())
    assert count == (3 + 4) * hidden
    assert sum(p.numel() for p in dense.position_embeddings.parameters()) == (4 * 4 + 3) * hidden
    positions = low_rank.position_embeddings(5)
    assert positions.shape == (23, hidden) and torch.equal(positions[:4], positions[16:20])
    for num_tables in (1, 7, 30):  # any V through the low-rank positions and masks
        assert low_rank(torch.randn(2, num_tables * 4 + 3, 5), num_tables=num_tables).last_hidden_state.shape[1] == (
            num_tables * 4 + 3
        )
    with pytest.raises(ValueError, match="dense positional table is defined for num_tables=4 only"):
        dense(torch.randn(2, 31, 5), num_tables=7)
    with pytest.raises(ValueError, match=r"input_features must have 19 along length \(num_tables·\(num_columns\+1\)"):
        low_rank(torch.randn(2, 20, 5))
    with pytest.raises(ValueError, match=r"input_features must have 23 along length .*num_tables=5"):
        low_rank(torch.randn(2, 19, 5), num_tables=5)
    for bad in (0, 2.5, True, torch.tensor([4, 5])):
        with pytest.raises(ValueError, match="num_tables must be"):
            low_rank(torch.randn(2, 19, 5), num_tables=bad)
    base = tiny_config().to_dict()
    with pytest.raises(ValueError, match=r"max_position_embeddings=10 is invalid: must be >= the prompt length"):
        LowRankIclConfig(**{**base, "position_embedding_type": "dense", "max_position_embeddings": 10})
    assert LowRankIclConfig(**{**base, "num_tables": 6, "max_position_embeddings": None}).max_position_embeddings == 27


@pytest.mark.parametrize("pattern", ["table", "full"])
def test_causality_is_a_config_choice(pattern):
    """Causal: changing row t never changes the hidden states of rows before t; bidirectional: it reaches them."""
    torch.manual_seed(0)
    features = torch.randn(1, 19, 5)
    edited = features.clone()
    edited[0, 15] += 1.0  # the last column of table 3
    for causal in (True, False):
        model = LowRankIclModel(tiny_config(is_causal=causal, attention_pattern=pattern)).eval()
        with torch.no_grad():
            before, after = model(features).last_hidden_state, model(edited).last_hidden_state
        if causal:
            assert torch.equal(before[0, :15], after[0, :15])
        else:
            assert not torch.allclose(before[0, :15], after[0, :15])
        assert not torch.allclose(before[0, -1], after[0, -1])  # the query row reads the table


def test_labels_are_plus_or_minus_one():
    model = LowRankIclForPromptClassification(tiny_config())
    features = torch.randn(2, 19, 5)
    loss = model(features, labels=torch.tensor([1, -1])).loss
    logits = model(features).logits
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match=r"labels must be -1 \(not connected\) or \+1 \(connected\); got \[0.0\]"):
        model(features, labels=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch=2,\)"):
        model(features, labels=torch.tensor([1.0]))


def test_processor_layout_names_and_errors(tmp_path):
    processor = LowRankIclProcessor(n_dims=5, num_columns=3, feature_seed=42)
    tables = [["user_id", "name", "email"], ["order_id", "user_id", "total"]]
    batch = processor(tables, ["name", "total"])
    features = batch["input_features"]
    assert features.shape == (1, 2 * 4 + 3, 5) and batch["num_tables"].tolist() == [2]
    assert torch.equal(features[0, 1], features[0, 6])  # "user_id" in both tables
    assert torch.equal(features[0, -2], features[0, 2]) and torch.equal(features[0, -1], features[0, 7])
    assert not features[0, 8].any()  # the separator
    again = LowRankIclProcessor(n_dims=5, num_columns=3, feature_seed=42)(tables, ["name", "total"])["input_features"]
    assert torch.equal(again, features)
    other = LowRankIclProcessor(n_dims=5, num_columns=3, feature_seed=7)(tables, ["name", "total"])["input_features"]
    assert not torch.equal(other, features)
    ids = processor([[1, 2, 3]], [1, 3])["input_features"]
    assert not torch.equal(ids[0, 1], processor([["1", 2, 3]], [1, 3])["input_features"][0, 1])  # 1 and "1" differ
    two = processor([tables, tables[::-1]], [["name", "total"], ["email", "user_id"]])
    assert two["input_features"].shape == (2, 11, 5) and torch.equal(two["input_features"][0], features[0])
    with pytest.raises(ValueError, match=r"tables\[1\] must list exactly num_columns=3 columns"):
        processor([["a", "b", "c"], ["a", "b"]], ["a", "b"])
    with pytest.raises(ValueError, match="query must be 2 column names or ids"):
        processor(tables, ["a"])
    with pytest.raises(ValueError, match=r"tables\[0\] holds \[-1\]"):
        processor([[-1, 2, 3]], [1, 2])
    with pytest.raises(ValueError, match="the prompts of a batch must have the same number of tables"):
        processor([tables, tables[:1]], [["a", "b"], ["a", "b"]])
    with pytest.raises(ValueError, match="num_columns=0 is invalid"):
        LowRankIclProcessor(num_columns=0)
    processor.save_pretrained(tmp_path)
    from transformers import AutoFeatureExtractor, AutoProcessor

    for auto in (AutoFeatureExtractor, AutoProcessor):
        loaded = auto.from_pretrained(tmp_path, trust_remote_code=True)
        assert torch.equal(loaded(tables, ["name", "total"])["input_features"], features)
    answers = processor.post_process(torch.tensor([[2.0], [-1.0]]))
    assert [a["connected"] for a in answers] == [True, False] and abs(answers[0]["score"] - 0.8808) < 1e-4


def test_collator_and_binary_metrics():
    processor = LowRankIclProcessor(n_dims=5, num_columns=3)
    examples = table_connectivity(4, 3, 0.5, num_examples=6, seed=0).to_list()
    batch = PromptCollator(processor)(examples)
    assert batch["input_features"].shape == (6, 19, 5)
    assert batch["labels"].tolist() == [float(e["label"]) for e in examples]
    scores = torch.tensor([2.0, -1.0, 0.5, -3.0, -0.5])
    labels = torch.tensor([1, 1, -1, -1, -1])
    results = binary_metrics(scores, labels)
    # predictions +1, -1, +1, -1, -1: 3 of 5 right; recall of +1 1/2, of -1 2/3; precision of +1 1/2
    assert results["accuracy"] == pytest.approx(0.6)
    assert results["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert results["f1"] == pytest.approx(0.5)
    assert results["auroc"] == pytest.approx(4 / 6)  # 4 of the 6 (positive, negative) pairs ordered right
    assert "auroc" not in binary_metrics(scores, -torch.ones(5))


def test_a_run_sizes_the_dense_table_from_its_data(tmp_path):
    """The data's V sets the model's (the tiny config has V=4; the run trains at V=3): the dense positional table is
    derived again for it rather than kept at the config file's 19 rows (which would leave rows without gradients)."""
    import json

    from hf_models.cli import main

    run = tmp_path / "run"
    overrides = json.dumps({"position_embedding_type": "dense", "attention_pattern": "full"})
    assert main(["train", "configs/train/lowrank_icl_table_tiny.yaml", "--output_dir", str(run), "--max_steps", "2",
                 "--num_tables", "3", "--eval_examples", "16", "--model_overrides", overrides, "--precision", "no",
                 "--save_strategy", "no"]) == 0  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["num_tables"] == 3 and config["max_position_embeddings"] == 3 * 4 + 3
    assert json.loads((run / "eval_results.json").read_text())["eval_num_tables"] == 3


def test_the_task_of_a_config_without_architectures():
    """A config without `architectures` takes the only task whose head its architecture has: a stock Llama's
    sequence classifier (registered with the same Auto class as the prompt classifier) is no prompt classifier."""
    from transformers import LlamaConfig

    from hf_models.tasks import task_for_config

    assert task_for_config(LlamaConfig()).name == "causal_lm"
    config = tiny_config()
    config.architectures = None
    assert task_for_config(config).name == "prompt_classification"


def test_prompt_data_arguments_are_checked_by_name():
    from hf_models.tasks.prompt_classification import PromptClassificationTask, PromptDataArguments

    task = PromptClassificationTask()
    task.check_data(PromptDataArguments())  # V and C default to the model's
    for fields, message in (({"num_tables": 0}, "data: num_tables=0 is invalid"),
                            ({"num_columns": 0}, "data: num_columns=0 is invalid"),
                            ({"edge_probability": 1.5}, "data: edge_probability=1.5 is invalid"),
                            ({"eval_seed": 0}, "data.eval_seed=0 equals data.data_seed_base"),
                            ({"prompt_task": "sorting"}, "data.prompt_task='sorting' is not one of")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            task.check_data(PromptDataArguments(**fields))


@pytest.mark.parametrize("num_columns", [2, 12])
def test_card_usage_is_formatted_and_its_tables_are_the_examples(num_columns):
    """The card's usage example lays its tables out as the code formatter would, even rows too wide for one line, and
    they evaluate back to the example tables and query."""
    from card_snippets import assert_formatted, python_blocks

    from hf_models.tasks.prompt_classification import PromptClassificationTask, example_tables

    config = tiny_config(num_columns=num_columns)
    processor = LowRankIclProcessor(n_dims=config.n_dims, num_columns=num_columns, feature_seed=3)
    results = {"eval_accuracy": 0.9, "eval_balanced_accuracy": 0.8, "eval_f1": 0.5, "eval_loss": 0.3}
    fields = PromptClassificationTask().card_fields(
        LowRankIclForPromptClassification(config), processor, {}, {}, results
    )
    (code,) = python_blocks(fields["usage"].replace("{repo_id}", "org/model"))
    assert_formatted(code)
    namespace = {}
    exec("\n".join(line for line in code.splitlines() if line.startswith(("tables", "query", " ", "]"))), namespace)
    tables = example_tables(num_columns)
    assert namespace["tables"] == tables and namespace["query"] == [tables[0][0], tables[2][-1]]
    assert len(tables[2]) == num_columns and max(map(len, code.splitlines())) <= 119
