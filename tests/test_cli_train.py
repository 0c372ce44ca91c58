"""``python -m core train`` as users meet it: the families in --help, progress on the terminal, --no-map."""
from __future__ import annotations

import pytest

from core.__main__ import main
from core.io.ingest import import_folder
from core.models.registry import MODELS
from core.store.project_store import Store
from tests.helpers import digits_folder


def test_train_help_lists_the_model_families(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS) and "--no-map" in out


def test_train_prints_progress_and_no_map_skips_the_projection(tmp_path, capsys, torch_one_thread):
    store = Store.create(tmp_path / "p", modality="image", labels=["0", "1", "2"], min_votes=1, extractor="pixels_pca")
    import_folder(store, digits_folder(tmp_path / "src", per_class=8), labels_from_folders="initial")
    assert main(["train", str(store.dir), "--model", "classifier", "--no-map", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "publish" in err  # the phases, rewritten on one line
    run = store.run()
    assert all(r["x"] is None for r in store.predictions(run["id"]))
    assert main(["train", str(store.dir), "--model", "classifier", "--quiet", "--json", "--device", "cpu"]) == 0
    assert "\r" not in capsys.readouterr().err
    assert any(r["x"] is not None for r in store.predictions(store.run()["id"]))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_family_names_its_parameters_for_the_early_check(name):
    from dataclasses import fields

    from core.errors import ValidationError

    family = MODELS[name]
    module, cls = family.config.split(":")
    real = [f.name for f in fields(getattr(__import__(module, fromlist=[cls]), cls))]
    family.check_params({real[0]: None})
    with pytest.raises(ValidationError, match="'parameter name' parameter of " + name):
        family.check_params({"epochz": 3})


def test_a_misspelled_param_is_refused_before_any_work(tmp_path, capsys):
    store = Store.create(tmp_path / "p", modality="image", labels=["0", "1"], min_votes=1, extractor="pixels_pca")
    assert main(["train", str(store.dir), "--model", "dec", "--param", "pretrain_epochz=3"]) == 1
    assert "pretrain_epochs" in capsys.readouterr().err  # the allowed names are listed
    assert store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
