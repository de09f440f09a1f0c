"""The held-out pretraining option: the supervised image stage never gets a label of the held-out types."""

import pytest
import torch

from dapo.synthetic.corpus import DEFECT_ORDER, state_index
from dapo.synthetic.pretrain_config import HeldoutPretrainConfig, PretrainConfig, target_only_defects
from dapo.synthetic.pretrain_data import step_views
from dapo.synthetic.pretrain_losses import global_targets

TINY = dict(full_per_step=6, local_images_per_step=3)
STEPS = range(4)


def _named(views):
    return {d for v in views for d in v.defects}


def _labelled(views):
    return {int(x) for v in views for x in v.patch_labels.flatten()}


def test_target_only_types_are_those_the_source_world_lacks():
    held = target_only_defects()
    assert held and set(held) <= set(DEFECT_ORDER)
    assert HeldoutPretrainConfig().heldout_defects == held


def test_heldout_types_get_no_supervised_label_at_tiny_size():
    held = ("burnt", "spot", "missing")
    plain = [v for step in STEPS for v in step_views(PretrainConfig(**TINY), step)]
    assert _named(plain) & set(held), "the default recipe shows the types (else this test checks nothing)"
    assert _labelled(plain) & {state_index(d) for d in held}
    config = HeldoutPretrainConfig(heldout_defects=held, **TINY)
    views = [v for step in STEPS for v in step_views(config, step)]
    assert len(views) == len(plain)                      # replaced, not dropped
    assert not _named(views) & set(held)
    assert not _labelled(views) & {state_index(d) for d in held}
    _, state = global_targets(views, config.corpus.products, config.corpus.named_product_min_size)
    assert not set(state.tolist()) & {state_index(d) for d in held}
    assert _named(views) - set(held), "other defect types are still supervised"


def test_heldout_is_deterministic_and_leaves_the_default_recipe_alone():
    config = HeldoutPretrainConfig(heldout_defects=("burnt",), **TINY)
    a, b = step_views(config, 1), step_views(config, 1)
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b))
    assert "heldout_defects" not in PretrainConfig.__dataclass_fields__


def test_unknown_heldout_type_is_refused():
    with pytest.raises(ValueError, match="unknown defect types"):
        HeldoutPretrainConfig(heldout_defects=("wobble",))
