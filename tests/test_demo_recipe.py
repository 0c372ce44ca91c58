"""The demo project comes from the recipe in data/demo.json."""
import json

import pytest

from core.errors import ValidationError
from core.io.demo import RECIPE, create_demo, load_recipe


def test_the_demo_follows_its_recipe(tmp_path):
    recipe = json.loads(RECIPE.read_text())
    recipe.update(name="Tiny digits", media_folder="digits", min_votes=2)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    store, created = create_demo(tmp_path / "demo", n=20, queue_features=False, recipe=path)
    assert created and store.item_count() == 20
    s = store.settings()
    assert (s["name"], s["min_votes"], s["extractor"]) == ("Tiny digits", 2, recipe["extractor"])
    assert store.labels() == recipe["labels"]
    assert sorted(p.name for p in (store.dir / "media" / "digits").iterdir())[:2] == ["00000.png", "00001.png"]
    assert len(store.reference_labels()) == 20 and store.annotation_count() == 0


def test_a_bad_recipe_is_refused_by_name(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValidationError, match="lacks"):
        load_recipe(bad)
    recipe = load_recipe()
    recipe["source"] = "somewhere_online"
    bad.write_text(json.dumps(recipe))
    with pytest.raises(ValidationError, match="somewhere_online"):
        load_recipe(bad)
    assert not (tmp_path / "demo").exists()
