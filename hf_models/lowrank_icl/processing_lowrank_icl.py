"""The LowRank ICL processor: a user's tables and query (column names or ids) -> the model's `input_features`.

A prompt is V tables of C columns each and a query of 2 columns: "is a table holding the first column connected,
through tables that share columns, to a table holding the second?". The model never sees names or ids: each row is
a fixed random Gaussian feature vector. Table i's token gets the vector of ("table", i); a column gets the vector of
("column", name); the separator is all zeros. The vectors come from `feature_seed` alone (Python's `random.Random`
seeded with the seed, the kind and the name, so they are defined for every name, the same on every platform and
every run), which is why a model trained on these features answers questions about new tables: the names only have
to be told apart, and equal names get equal vectors.

Layout of the rows (L = V·(C+1) + 3): table 0, its C columns, table 1, its C columns, ..., separator, q1, q2.
"""

import random

import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


def _is_name(value):
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or isinstance(value, str)


class LowRankIclProcessor(FeatureExtractionMixin):
    """Turns `(tables, query)` into `{"input_features": (B, L, n_dims), "num_tables": (B,)}`.

    Args:
        n_dims (`int`): width of the feature vectors (the model's `n_dims`).
        num_columns (`int`): C, columns per table (the model's `num_columns`).
        feature_seed (`int`): the seed of every feature vector (fixed at training; the model only understands the
            vectors it was trained with).
    """

    model_input_names = ["input_features", "num_tables"]

    def __init__(self, n_dims=5, num_columns=3, feature_seed=42, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("n_dims", n_dims), ("num_columns", num_columns)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LowRankIclProcessor.{name}={value!r} is invalid: must be an integer >= 1")
        if isinstance(feature_seed, bool) or not isinstance(feature_seed, int):
            raise ValueError(f"LowRankIclProcessor.feature_seed={feature_seed!r} is invalid: must be an integer")
        self.n_dims = n_dims
        self.num_columns = num_columns
        self.feature_seed = feature_seed
        self._cache = {}

    def feature_vector(self, kind, name):
        """The fixed feature vector (n_dims floats) of a table index (`kind="table"`) or a column name."""
        key = (kind, name)
        if key not in self._cache:
            # a str seed is hashed with SHA-512 by random.Random: the same vector on every platform and Python 3
            draw = random.Random(f"hf_models.lowrank_icl:{self.feature_seed}:{kind}:{type(name).__name__}:{name}")
            self._cache[key] = [draw.gauss(0.0, 1.0) for _ in range(self.n_dims)]
        return self._cache[key]

    def prompt_rows(self, tables, query):
        """The L feature rows of one prompt, as lists of floats (checked: V >= 1 tables of C names, 2 query names)."""
        if not isinstance(tables, (list, tuple)) or not tables:
            raise ValueError(f"tables must be a non-empty list of tables (each a list of {self.num_columns} column "
                             f"names or ids); got {tables!r}")  # fmt: skip
        rows = []
        for index, columns in enumerate(tables):
            if not isinstance(columns, (list, tuple)) or len(columns) != self.num_columns:
                raise ValueError(f"tables[{index}] must list exactly num_columns={self.num_columns} columns; got "
                                 f"{columns!r}")  # fmt: skip
            bad = [c for c in columns if not _is_name(c)]
            if bad:
                raise ValueError(f"tables[{index}] holds {bad!r}: columns are names (str) or ids (int >= 0)")
            rows.append(self.feature_vector("table", index))
            rows.extend(self.feature_vector("column", c) for c in columns)
        if not isinstance(query, (list, tuple)) or len(query) != 2 or not all(_is_name(c) for c in query):
            raise ValueError(f"query must be 2 column names or ids (first, second); got {query!r}")
        rows.append([0.0] * self.n_dims)  # the separator
        rows.extend(self.feature_vector("column", c) for c in query)
        return rows

    def __call__(self, tables, query, return_tensors="pt"):
        """One prompt (`tables`: a list of tables, each a list of C column names or ids; `query`: 2 names), or a batch
        (a list of such table lists and a list of queries; every prompt of a batch has the same number of tables)."""
        # one prompt when the tables hold names; a batch when they hold lists of tables
        single = not (
            isinstance(tables, (list, tuple)) and tables and isinstance(tables[0], (list, tuple)) and tables[0]
            and isinstance(tables[0][0], (list, tuple))
        )  # fmt: skip
        batch_tables, batch_queries = ([tables], [query]) if single else (tables, query)
        if not isinstance(batch_queries, (list, tuple)) or len(batch_queries) != len(batch_tables):
            raise ValueError(f"a batch of {len(batch_tables)} prompts needs as many queries; got {batch_queries!r}")
        prompts = [self.prompt_rows(t, q) for t, q in zip(batch_tables, batch_queries, strict=True)]
        counts = {len(t) for t in batch_tables}
        if len(counts) != 1:
            raise ValueError(f"the prompts of a batch must have the same number of tables; got {sorted(counts)}")
        data = {"input_features": prompts, "num_tables": [counts.pop()] * len(prompts)}
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}: LowRankIclProcessor returns 'pt' tensors or lists")
        if return_tensors == "pt":
            data = {"input_features": torch.tensor(prompts, dtype=torch.float32),
                    "num_tables": torch.tensor(data["num_tables"])}  # fmt: skip
        return BatchFeature(data)

    def post_process(self, logits):
        """Per prompt {"connected": bool, "score": P(connected)} from the model's logits (B, 1)."""
        probabilities = torch.sigmoid(torch.as_tensor(logits).float().reshape(-1))
        return [{"connected": bool(p > 0.5), "score": float(p)} for p in probabilities]

    def to_dict(self):
        output = super().to_dict()
        output.pop("_cache", None)
        auto_map = output.get("auto_map")
        if auto_map and "AutoFeatureExtractor" in auto_map:  # AutoProcessor loads it as well
            output["auto_map"] = {**auto_map, "AutoProcessor": auto_map["AutoFeatureExtractor"]}
        return output


__all__ = ["LowRankIclProcessor"]
