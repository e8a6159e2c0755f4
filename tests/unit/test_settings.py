import json

from s2s_desktop.image_meta import parse_parameters
from s2s_desktop.settings import ModelEntry, Settings, app_home


def test_settings_round_trip_under_s2s_home(isolated_home):
    assert app_home() == isolated_home
    settings = Settings()
    settings.add_model(ModelEntry("sd15", "/models/sd15", "folder"))
    settings.active_model = "sd15"
    settings.generate.steps = 40
    settings.save()
    loaded = Settings.load()
    assert loaded.active.source == "/models/sd15" and loaded.generate.steps == 40
    assert not list(isolated_home.glob("*.tmp"))


def test_unreadable_settings_are_kept_aside_not_lost(isolated_home):
    (isolated_home / "settings.json").write_text("{broken", encoding="utf-8")
    assert [m.name for m in Settings.load().models] == ["Toy world (demo)"]  # defaults, demo model only
    assert (isolated_home / "settings.json.broken").read_text(encoding="utf-8") == "{broken"


def test_removing_the_active_model_picks_another():
    settings = Settings()
    settings.add_model(ModelEntry("a", "/a"))
    settings.add_model(ModelEntry("b", "/b"))
    settings.active_model = "a"
    settings.remove_model("a")
    assert settings.active_model == "b"


def test_parse_a1111_parameters():
    text = "a dog, on a beach\nNegative prompt: blurry\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 3, Size: 64x64"
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "a dog, on a beach"
    assert parsed["negative_prompt"] == "blurry"
    assert (parsed["Steps"], parsed["Seed"], parsed["Size"], parsed["CFG scale"]) == ("20", "3", "64x64", "7.5")
    assert json.dumps(parsed)


def test_demo_model_is_listed_and_active_on_first_run_but_not_forced():
    from s2s_desktop.demo import DEMO_MODEL_NAME, toy_model_path

    settings = Settings.load()
    assert settings.active_model == DEMO_MODEL_NAME and settings.active.source == str(toy_model_path())
    settings.add_model(ModelEntry("mine", "/models/mine", "folder"))
    settings.active_model = "mine"
    settings.save()
    again = Settings.load()
    assert again.active_model == "mine" and [m.name for m in again.models] == [DEMO_MODEL_NAME, "mine"]
