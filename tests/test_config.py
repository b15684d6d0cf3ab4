from pathlib import Path

import pytest
import yaml

from sceneseg.config import MODEL_SECTIONS, load_params, parse_params
from sceneseg.models.registry import MODELS, all_model_params, model_params

ROOT = Path(__file__).resolve().parents[1]


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_parse_with_the_published_recipe():
    p = load_params(ROOT / "params.yaml")
    t, lg = p.train, model_params(p, "lgss")
    assert (t.model, t.lr, t.epochs, t.batch_size) == ("simseq", None, None, None)  # None: each model's own
    assert (model_params(p, "simseq").epochs, lg.epochs) == (20, 30)
    assert (lg.lr, lg.weight_decay, lg.lr_decay_epochs, lg.lr_decay_gamma, lg.batch_size) == (0.01, 0.0005, [15], 0.1, 8)
    assert lg.class_weights == [0.5, 5.0]
    assert lg.fusion_weights == {"place": 0.5, "cast": 0.2, "action": 0.2, "audio": 0.1}
    assert model_params(p) == model_params(p, "simseq")  # train.model selects simseq
    assert (lg.shot_num, p.featurize.seq_len) == (4, 10)
    assert p.data.source == "synthetic"


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["train"].update(lrr=0.1), "unknown params key 'train.lrr'"),
    (lambda r: r.update(extra={}), "unknown params key 'extra'"),
    (lambda r: r["data"].update(source="ftp"), "'data.source': expected one of synthetic, moviescenes, local, video, found 'ftp'"),
    (lambda r: r["train"].update(lr="fast"), "'train.lr': expected a number, found 'fast'"),
    (lambda r: r["train"].update(epochs=0), "'train.epochs': expected a value in"),
    (lambda r: r["train"].pop("seed"), "'train.seed' is missing"),
    (lambda r: r["lgss"].update(shot_num=3), "'lgss.shot_num': expected an even number"),
    (lambda r: r["featurize"].update(shot_num=4), "params key 'featurize.shot_num' is now 'lgss.shot_num'"),
    (lambda r: r["train"].update(eval_batch_size=256), "params key 'train.eval_batch_size' is now 'lgss.eval_batch_size'"),
    (lambda r: r["lgss"].update(eval_batch_size=0), "'lgss.eval_batch_size': expected a value in [1, 1000000], found 0"),
    (lambda r: r["lgss"].update(modalities=["place", "smell"]), "'lgss.modalities': expected one of"),
    (lambda r: r["lgss"].update(modalities=["place"]), "'lgss.fusion_weights': expected one weight per modality"),
    (lambda r: r["simseq"].update(widths=[0, 2]), "'simseq.widths': expected distinct widths"),
    (lambda r: r["simseq"].update(hidden=0), "'simseq.hidden': expected a value in"),
    (lambda r: r["simseq"].update(sharpen=-0.1), "'simseq.sharpen': expected a value in [0, 10], found -0.1"),
    (lambda r: r["train"].update(model="bert"), "'train.model': expected one of simseq, lgss, found 'bert'"),
    (lambda r: r["train"].update(lr=None), None),
    (lambda r: r["train"].update(batch_size=0), "'train.batch_size': expected a value in [1, 1000000], found 0"),
    (lambda r: r["train"].update(batch_size=16), None),
    (lambda r: r["simseq"].update(batch_size=0), "'simseq.batch_size': expected a value in [1, 1000000], found 0"),
    (lambda r: r["lgss"].update(batch_size=-2), "'lgss.batch_size': expected a value in [1, 1000000], found -2"),
    (lambda r: r.pop("lgss"), "params key 'lgss' (the section of model 'lgss') is missing"),
    (lambda r: r["evaluate"].update(stacked_widths=[]), "'evaluate.stacked_widths': expected distinct widths"),
    (lambda r: r["data"]["synthetic"].update(min_setups=3, max_setups=2), "'data.synthetic.max_setups': expected a value in"),
    (lambda r: r["data"]["synthetic"].update(min_shots=5), "'data.synthetic.max_shots': expected a value in [5, 100000], found 0"),
    (lambda r: r["data"]["synthetic"].update(preset="hard"), "'data.synthetic.preset': expected one of realistic, easy"),
    (lambda r: r["data"]["synthetic"].update(length_scale=0), "'data.synthetic.length_scale': expected a value in"),
    (lambda r: r["evaluate"].update(boosted_cross_widths=[2, 2]), "'evaluate.boosted_cross_widths': expected distinct"),
    (lambda r: r["evaluate"].update(boosted_context=-1), "'evaluate.boosted_context': expected a value in"),
    (lambda r: r["train"].update(threshold_metric="miou"), "needs whole validation movies"),
    (lambda r: r["split"].update(seed=-1), "'split.seed': expected a value in [0, 4294967295], found -1"),
    (lambda r: r["data"]["video"].update(detector="pixels"),
     "'data.video.detector': expected one of content, adaptive, hash, histogram, threshold, found 'pixels'"),
    (lambda r: r["data"]["video"].update(extractor="resnet50"),
     "'data.video.weights': extractor resnet50 needs a weights file (ImageNet or Places365 ResNet-50), found ''"),
    (lambda r: r["data"]["video"].update(frame_width=16), "'data.video.frame_width': expected a value in [32, 4096], found 16"),
    (lambda r: r["data"]["video"].update(threshold=None), None),
    (lambda r: r["data"]["video"].pop("tolerance_s"), "params key 'data.video.tolerance_s' is missing"),
])
def test_bad_params_name_the_key(edit, message):
    r = raw()
    edit(r)
    if message is None:  # valid
        all_model_params(parse_params(r))
        return
    with pytest.raises(ValueError, match=None) as e:
        all_model_params(parse_params(r))  # each model's own section is parsed where it is used
    assert message in str(e.value)
    assert str(e.value).startswith("params.yaml: ")


def test_missing_params_file(tmp_path):
    with pytest.raises(ValueError, match="expected the pipeline parameters file"):
        load_params(tmp_path / "params.yaml")


def test_config_names_the_sections_of_the_registered_models():
    """config keeps the models' sections as read (it imports no model); the registry parses them."""
    assert set(MODEL_SECTIONS) == set(MODELS)
    p = load_params(ROOT / "params.yaml")
    assert set(p.models) == set(MODEL_SECTIONS) and all(isinstance(v, dict) for v in p.models.values())
