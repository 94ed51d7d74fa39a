"""A served generator checks every request as sent: one sentence naming the field, nothing drawn.

    pytest -q tests/test_serving_requests.py      # a few seconds: an untrained 8x8 generator

The runner is what ``mlflow models serve`` calls (tests/test_registry.py sends some of
these over HTTP); here the whole class of bad requests goes through it in process, as
JSON records and as the table MLflow's scoring server builds from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

Z_DIM, CLASSES = 8, [f"c{k}" for k in range(10)]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    import torch

    from gan.export import save_generator
    from gan.inference.generate import GenerateRunner
    from gan.models import build_G

    G_kwargs = {"z_dim": Z_DIM, "width": 16, "num_classes": len(CLASSES), "out_shape": [1, 8, 8]}
    torch.manual_seed(0)
    spec = {"arch": "mlp", "G_kwargs": G_kwargs, "z_dim": Z_DIM, "num_classes": len(CLASSES), "channels": 1,
            "image_size": 8, "class_names": CLASSES}  # fmt: skip
    out = tmp_path_factory.mktemp("served") / "generator"
    save_generator(build_G("mlp", **G_kwargs), spec, out)
    return GenerateRunner(str(out))


BAD = [
    ([{"n": 2.5}], r"n = 2.5 is invalid; it must be a whole number"),
    ([{"n": "3"}], r"n = '3' is invalid; it must be a whole number, not str"),
    ([{"n": True}], r"n = True is invalid; it must be a whole number, not bool"),
    ([{"n": 0}], r"n = 0 is invalid; it must be at least 1"),
    ([{"n": 2**63}], r"n = 9223372036854775808 is more than one request may ask for \(10000\)"),
    ([{"n": 2**64}], r"n = 18446744073709551616 is more than one request may ask for"),
    ([{"n": 6000}, {"n": 6000}], r"the 2 rows ask for 12000 samples, which is more than one request may ask for \(10000\)"),
    ([{"n": 9000}, {"z": [[0.0] * Z_DIM] * 1001}], r"the 2 rows ask for 10001 samples"),
    ([{"n": 2, "colour": "red"}], r"unknown field 'colour'; a row may hold n, labels, seed, truncation, z"),
    ([{"n": 2, "lables": [3]}], r"unknown field 'lables'"),
    ([{"n": 2, "seed": -1}], r"seed = -1 is invalid; it must be from 0 to 9223372036854775807"),
    ([{"n": 2, "seed": 2.5}], r"seed = 2.5 is invalid; it must be a whole number"),
    ([{"n": 2, "labels": [1, 2, 3]}], r"labels has 3 entries for 2 samples; give at most one label per sample"),
    ([{"n": 2, "labels": [1.5]}], r"a labels entry = 1.5 is invalid; it must be a whole number"),
    ([{"n": 2, "labels": [10]}], r"label 10 is unknown to this generator; allowed labels are 0..9"),
    ([{"n": 2, "labels": ["cat"]}], r"label 'cat' is unknown to this generator; use an index 0..9 or one of c0, c1"),
    ([{"n": 2, "labels": "3"}], r"labels = '3' is invalid; send a list of class indices or names"),
    ([{"n": 2, "truncation": "x"}], r"truncation = 'x' is invalid; it must be a finite number"),
    ([{"n": 2, "truncation": -1.0}], r"truncation = -1.0 is invalid"),
    ([{"n": 1, "z": [[0.0] * Z_DIM]}], r"gives both z and n; z fixes the samples, so drop n"),
    ([{"seed": 1, "z": [[0.0] * Z_DIM]}], r"gives both z and seed"),
    ([{"truncation": 1.0, "z": [[0.0] * Z_DIM]}], r"truncation has no effect on a given z for this generator"),
    ([{"z": [[0.0] * (Z_DIM - 1)]}], r"z has shape \[1, 7\]; it must be \[k, 8\]"),
    ([{"z": [[float("nan")] * Z_DIM]}], r"z holds NaN or infinite values"),
    ([{"seed": 3}], r"a request row has neither n nor z"),
    ([], r"the input holds no request"),
]


@pytest.mark.parametrize("form", ["records", "table"])
@pytest.mark.parametrize(("rows", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_request_is_refused_in_one_sentence(runner, rows, message, form):
    request = rows if form == "records" else pd.DataFrame(rows)
    with pytest.raises(MlflowException, match=message) as err:
        runner.predict(request)
    assert "\n" not in str(err.value.message)


def test_labels_by_name_or_index_and_class_names_in_the_answer(runner):
    out = runner.predict([{"n": 3, "labels": ["c7", 2], "seed": 5}, {"n": 2}])
    assert out["labels"].tolist() == [7, 2, 7, 0, 1]
    assert out["class_names"].tolist() == ["c7", "c2", "c7", "c0", "c1"]
    by_index = runner.predict([{"n": 3, "labels": [7, 2], "seed": 5}])
    assert np.array_equal(by_index["images"], out["images"][:3])


def test_a_missing_seed_means_seed_0_and_the_inputs_format_gives_the_same_samples(runner):
    a, b = runner.predict([{"n": 4}]), runner.predict([{"n": 4, "seed": 0}])
    assert np.array_equal(a["images"], b["images"])  # documented: no seed, same answer every time
    c = runner.predict({"n": np.array(4), "seed": np.array(0)})  # what {"inputs": {...}} becomes
    assert np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["images"], runner.predict([{"n": 4, "seed": 1}])["images"])
    # the whole request (10,000 over rows) is the cap, and a request at the cap is answered
    assert len(runner.predict([{"n": 9999}, {"n": 1}])["images"]) == 10_000
