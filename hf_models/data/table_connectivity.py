"""The table-connectivity task (the in-context-learning fork of Garg et al.'s codebase, `TableConnectivitySampler`
and `TableConnectivity`), as seeded, reproducible `datasets` generators.

One prompt, for V tables of C columns and edge probability rho:
1. each table draws C column ids uniformly from [0, V·C) (repeats and chance sharing happen);
2. an Erdős–Rényi graph G(V, rho) over the tables: for each edge (u, v), u < v, in order, a random column of u is
   copied into a random slot of v (a later edge may overwrite an earlier copy);
3. the query: 2 column ids, each uniform in [0, V·C).
The label is +1 when a table holding the first query column is connected to a table holding the second through
tables that share a column id (the realised sharing graph, not the Erdős–Rényi graph; a table is connected to
itself), else -1 (also when a query column is in no table).

Examples hold ids only (`tables`, `query`, `label`); the model's processor (`LowRankIclProcessor`) turns them into
feature vectors, so the features are the model's and a user's tables are read the same way.
"""

import itertools
import random


def sample_tables(rng, num_tables, num_columns, edge_probability):
    """Steps 1 and 2: V tables of C column ids with the Erdős–Rényi copies applied."""
    vocabulary = num_tables * num_columns
    tables = [[rng.randrange(vocabulary) for _ in range(num_columns)] for _ in range(num_tables)]
    for u, v in itertools.combinations(range(num_tables), 2):
        if rng.random() < edge_probability:
            tables[v][rng.randrange(num_columns)] = tables[u][rng.randrange(num_columns)]
    return tables


def _components(tables):
    """Column id -> component of the sharing graph (tables joined when they share a column id; union-find), for the
    columns that are in some table."""
    parent = list(range(len(tables)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder = {}
    for index, columns in enumerate(tables):
        for column in columns:
            if column in first_holder:
                parent[root(index)] = root(first_holder[column])
            else:
                first_holder[column] = index
    return {column: root(holder) for column, holder in first_holder.items()}


def _label(component, query):
    a, b = (component.get(column) for column in query)
    return 1 if a is not None and a == b else -1


def connectivity_label(tables, query):
    """+1 if a table holding query[0] is connected to a table holding query[1] through shared columns (the same table
    counts), else -1 (also when a query column is in no table)."""
    return _label(_components(tables), query)


def sample_prompt(rng, num_tables, num_columns, edge_probability, label=None):
    """One example {tables, query, label}. `label=None`: the task's own distribution (the query uniform);
    `label=+1/-1`: tables as usual, then the query uniform among the column pairs with that label (tables without
    such a pair are drawn again): the balanced option."""
    vocabulary = num_tables * num_columns
    while True:
        tables = sample_tables(rng, num_tables, num_columns, edge_probability)
        if label is None:
            query = [rng.randrange(vocabulary), rng.randrange(vocabulary)]
            return {"tables": tables, "query": query, "label": connectivity_label(tables, query)}
        component = _components(tables)
        groups = {}
        for column, group in component.items():
            groups.setdefault(group, []).append(column)
        if label == 1:
            pairs = [(a, b) for members in groups.values() for a in members for b in members]
            query = list(pairs[rng.randrange(len(pairs))])
        else:
            if sum(len(members) ** 2 for members in groups.values()) == vocabulary**2:
                continue  # every pair of ids is connected: these tables have no negative query
            query = [rng.randrange(vocabulary), rng.randrange(vocabulary)]
            while _label(component, query) == 1:  # rejection: negatives are the common case
                query = [rng.randrange(vocabulary), rng.randrange(vocabulary)]
        return {"tables": tables, "query": query, "label": label}


def check_task_arguments(num_tables, num_columns, edge_probability, where="table_connectivity"):
    for name, value in (("num_tables", num_tables), ("num_columns", num_columns)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name}={value!r} is invalid: must be an integer >= 1")
    if isinstance(edge_probability, bool) or not isinstance(edge_probability, (int, float)) \
            or not 0 <= edge_probability <= 1:  # fmt: skip
        raise ValueError(f"{where}: edge_probability={edge_probability!r} is invalid: must be in [0, 1]")


def _examples(num_tables, num_columns, edge_probability, seed, indices, balanced):
    for index in indices:
        rng = random.Random(f"table_connectivity:{seed}:{index}")
        label = (1 if rng.random() < 0.5 else -1) if balanced else None
        yield sample_prompt(rng, num_tables, num_columns, edge_probability, label)


def table_connectivity(num_tables=20, num_columns=3, edge_probability=0.5, num_examples=1000, seed=0, balanced=False,
                       streaming=False):  # fmt: skip
    """A `datasets.Dataset` of `num_examples` prompts (example i drawn from its own seeded generator, so the first N
    examples are the same whatever `num_examples`), or with `streaming=True` an endless `datasets.IterableDataset`
    (`num_examples` ignored). `balanced`: each example's label is +1 or -1 with probability 1/2 (`sample_prompt`)."""
    import datasets

    check_task_arguments(num_tables, num_columns, edge_probability)
    features = datasets.Features({
        "tables": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
        "query": datasets.Sequence(datasets.Value("int32")),
        "label": datasets.Value("int8"),
    })  # fmt: skip
    arguments = {"num_tables": num_tables, "num_columns": num_columns, "edge_probability": edge_probability,
                 "seed": seed, "balanced": balanced}  # fmt: skip
    if streaming:
        return datasets.IterableDataset.from_generator(
            _examples, features=features, gen_kwargs={**arguments, "indices": itertools.count()}
        )
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"table_connectivity: num_examples={num_examples!r} is invalid: must be an integer >= 1")
    return datasets.Dataset.from_list(list(_examples(indices=range(num_examples), **arguments)), features=features)
