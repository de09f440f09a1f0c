"""The shared vocabulary validator and the prompt-length check, in the model and the Predictor."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from dapo.clip.vocabulary import PromptTooLongError, check_vocabulary, context_length, normalise_name, token_count
from dapo.engine.inference import Predictor
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.prompts import PLACEHOLDER

SHORT_MODEL = "dapo-test-short"
SHORT_CONTEXT = 16


@pytest.fixture(scope="module")
def short_backbone(tmp_path_factory, tiny_config):
    """The tiny test backbone with a 16-token text context."""
    from dapo.clip.backbone import load_backbone

    config = json.loads(json.dumps(tiny_config))
    config["text_cfg"]["context_length"] = SHORT_CONTEXT
    path = tmp_path_factory.mktemp("short_config") / f"{SHORT_MODEL}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    return load_backbone(SHORT_MODEL, None, image_size=32)


@pytest.fixture
def model(tiny_backbone):
    return DAPO(tiny_backbone, DAPOConfig(n_prompts=1))


# ------------------------------------------------------------------------------ the validator
def test_names_are_compared_normalised():
    assert normalise_name("  Broken__Large  ") == "broken large"
    assert normalise_name("faulty   imprint") == normalise_name("Faulty_Imprint") == "faulty imprint"
    assert normalise_name("hole") != normalise_name("holes")


def test_a_valid_vocabulary_is_kept_as_written():
    assert check_vocabulary(["scratch", "Faulty imprint"]) == ("scratch", "Faulty imprint")
    assert check_vocabulary(iter(("hole",))) == ("hole",)
    assert check_vocabulary((), allow_empty=True) == ()


@pytest.mark.parametrize("vocabulary, error, message", [
    ("hole", TypeError, r"not the string 'hole' \(it would be read letter by letter\)"),
    ({"hole", "scratch"}, TypeError, "must be ordered .* not a set"),
    (None, TypeError, "not None"),
    (("hole", None), TypeError, r"entry 1 is None \(NoneType\), not a defect name"),
    (("hole", 3), TypeError, r"entry 1 is 3 \(int\)"),
    (("", "hole"), ValueError, r"entry 0 is '': an empty or whitespace-only"),
    (("hole", "  \t"), ValueError, r"entry 1 is '  \\t': an empty or whitespace-only"),
    (("hole", "scratch", "hole"), ValueError, r"entry 2 \('hole'\) repeats entry 0 \('hole'\)"),
    (("broken_large", "Broken  large"), ValueError,
     r"entry 1 \('Broken  large'\) is the same defect once normalised \('broken large'\) "
     r"as entry 0 \('broken_large'\)"),
    (("Hole", "hole"), ValueError, r"entry 1 \('hole'\) is the same defect once normalised"),
    ((), ValueError, "is empty: a defect-aware model needs at least one defect name"),
])
def test_bad_vocabularies_name_the_entry(vocabulary, error, message):
    with pytest.raises(error, match=message):
        check_vocabulary(vocabulary)


@pytest.mark.parametrize("vocabulary, error, message", [
    ("hole", TypeError, "not the string 'hole'"),
    (("hole", None), TypeError, "entry 1 is None"),
    (("hole", " "), ValueError, "entry 1 is ' '"),
    (("hole", "HOLE"), ValueError, r"entry 1 \('HOLE'\) is the same defect"),
    ((), ValueError, "is empty"),
])
def test_the_model_and_the_predictor_share_the_validator(model, images, vocabulary, error, message):
    with pytest.raises(error, match=message):
        model(images, vocabulary)
    with pytest.raises(error, match=f"Predictor vocabulary .*{message}"):
        Predictor(model, vocabulary)


def test_a_string_never_becomes_its_letters(model):
    with pytest.raises(TypeError):
        Predictor(model, "hole")
    assert Predictor(model, ("hole",)).class_names == ("normal", "hole")


def test_binary_models_accept_an_empty_vocabulary_but_not_a_bad_one(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(text_prompts="object_agnostic", n_prompts=1, vision_depth=0))
    with torch.no_grad():
        assert model(images, ()).text_embeddings.shape[0] == 2
    with pytest.raises(ValueError, match="repeats"):
        model(images, ("hole", "hole"))


# ------------------------------------------------------------------------------ prompt lengths
def test_token_count_matches_the_tokenizer(tiny_backbone):
    tokenizer = tiny_backbone.tokenizer
    for text in ("scratch", "X X X X faulty imprint anomaly object", "a photo of a metal_nut with a scratch."):
        ids = tokenizer([text])[0]
        assert token_count(tokenizer, text) == int((ids != 0).sum())
    assert context_length(tokenizer, 77) == 77 and context_length(tokenizer, 40) == 40


def test_the_short_tower_really_cuts_long_names(short_backbone):
    """The damage the check prevents: two names differing at the end give the same token ids."""
    prefix = " ".join([PLACEHOLDER] * 9)
    texts = [f"{prefix} scratch on the upper left {side} anomaly object" for side in ("rim", "edge")]
    ids = short_backbone.tokenize(texts)
    assert ids.shape[1] == SHORT_CONTEXT and torch.equal(ids[0], ids[1])


def test_a_learned_prompt_that_does_not_fit_names_the_defect_and_the_count(short_backbone):
    model = DAPO(short_backbone, DAPOConfig(n_prompts=1))  # 4 deep + 5 context placeholders
    tokenizer = short_backbone.tokenizer
    long_name = "scratch on the upper left rim"
    words = len(tokenizer.encode(long_name))
    fixed = 2 + 4 + 5 + len(tokenizer.encode("anomaly object"))  # SOT, EOT, placeholders, suffix
    with pytest.raises(PromptTooLongError) as error:
        model.encode_text(("hole", long_name))
    message = str(error.value)
    needs = f"the prompt of {long_name!r} needs {fixed + words} tokens but the text tower holds {SHORT_CONTEXT}"
    assert needs in message
    assert f"take {fixed}, leaving {SHORT_CONTEXT - fixed} for the defect's words {long_name!r}, which take {words}" \
        in message
    assert "4 deep-token and 5 context placeholders" in message
    with pytest.raises(PromptTooLongError, match=repr(long_name)):
        Predictor(model, (long_name,))
    assert fixed + len(tokenizer.encode("faulty imprint")) <= SHORT_CONTEXT
    assert model.encode_text(("hole", "faulty imprint")).shape[0] == 3


def test_too_many_placeholders_leave_no_room(short_backbone):
    model = DAPO(short_backbone, DAPOConfig(n_prompts=1, n_ctx=10))  # SOT, 4 + 10 placeholders, normal object, EOT
    with pytest.raises(PromptTooLongError, match=r"prompt of 'normal' needs 18 tokens .* holds 16.*n_ctx"):
        model.encode_text(("hole",))


def test_a_handcrafted_prompt_that_does_not_fit_is_refused(short_backbone, test_prompts):
    config = DAPOConfig(text_prompts="handcrafted_defects", text_depth=0, vision_depth=0, **test_prompts)
    model = DAPO(short_backbone, config)
    assert model.encode_text(("scratch", "hole"), "screw").shape[0] == 3
    with pytest.raises(PromptTooLongError, match=r"prompt of 'normal' needs .* holds 16.*product name"):
        model.encode_text(("scratch",), "very long product name for a small metal part")
    long_name = "deep scratch along the whole outer rim"
    with pytest.raises(PromptTooLongError, match=rf"prompt of {long_name!r} needs \d+ tokens .*leaving \d+ for"):
        model.encode_text((long_name,), "screw")


def test_the_compact_backbone_refuses_names_its_32_tokens_would_cut():
    """The real case: the committed compact tower holds 32 tokens."""
    from dapo.clip.backbone import load_backbone

    backbone = load_backbone("dapo-compact", "synthetic", image_size=128)
    model = DAPO(backbone, DAPOConfig(n_prompts=1))
    limit = context_length(backbone.tokenizer, int(backbone.text.positional_embedding.shape[0]))
    assert limit == 32
    stem = ("long scratch running along the upper left rim of the brushed metal housing next to the small screw "
            "and the mounting bracket")
    names = (f"{stem} hole", f"{stem} thread")
    cut = backbone.tokenize([f"{' '.join([PLACEHOLDER] * 9)} {name} anomaly object" for name in names])
    assert torch.equal(cut[0], cut[1])  # what OpenCLIP would silently do
    with pytest.raises(PromptTooLongError, match=rf"prompt of {names[0]!r} needs \d+ tokens but the text tower "
                                                 r"holds 32.*leaving 19 for the defect's words"):
        Predictor(model, names)
    assert model.encode_text(("scratch", "hole")).shape == (3, backbone.embed_dim)
