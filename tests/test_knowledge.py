"""The defect knowledge base: files, mappings, prompts, seen/unseen marks."""

from __future__ import annotations

import pytest

from dapo.data.knowledge import (
    DatasetKnowledge,
    UnknownDefectError,
    available_datasets,
    defect_words,
    load_knowledge,
    multiads_state_prompts,
    multiads_templates,
    normal_state_prompts,
    normalise_label,
    product_key,
    seen_unseen,
)

BENCHMARKS = ("mvtec", "visa", "mpdd", "mad_sim", "mad_real", "real_iad")


def test_every_benchmark_has_a_knowledge_file():
    assert set(BENCHMARKS) <= set(available_datasets())


@pytest.mark.parametrize(
    "name, products, superclasses",
    [("mvtec", 15, 20), ("visa", 12, 18), ("mpdd", 6, 7), ("mad_sim", 20, 3), ("mad_real", 9, 2), ("real_iad", 30, 8)],
)
def test_dataset_sizes_match_the_papers(name, products, superclasses):
    # MultiADS: MVTec-AD 20 prompts incl. combined, VisA 18 types (+normal = its 19 states),
    # MPDD 7 (Table 8 / DAPO Table 13), MAD 3 / 2, Real-IAD 8 (Tables 15-17).
    knowledge = load_knowledge(name)
    assert isinstance(knowledge, DatasetKnowledge)
    assert len(knowledge.products) == products
    assert len(knowledge.superclasses) == superclasses
    assert knowledge.layout == name


@pytest.mark.parametrize(
    "dataset, label, superclass",
    [
        ("mvtec", "bent_lead", "bent"),
        ("mvtec", "manipulated_front", "bent"),
        ("mvtec", "broken_teeth", "broken"),
        ("mvtec", "metal_contamination", "contamination"),
        ("mvtec", "cut_lead", "cut"),
        ("mvtec", "print", "faulty imprint"),
        ("mvtec", "glue_strip", "glue"),
        ("mvtec", "missing_cable", "missing"),
        ("mvtec", "poke_insulation", "poke"),
        ("mvtec", "scratch_neck", "scratch"),
        ("mvtec", "squeezed_teeth", "squeeze"),
        ("mvtec", "thread_top", "thread"),
        ("mvtec", "oil", "liquid"),
        ("mvtec", "split_teeth", "misplaced"),
        ("mvtec", "pill_type", "damaged"),
        ("mvtec", "combined", "combined"),
        ("mpdd", "scratches", "scratch"),
        ("mpdd", "total_rust", "rust"),
        ("mpdd", "parts_mismatch", "mismatch"),
        ("mpdd", "anomalous", "flattening"),
        ("visa", "Chunk of Wax Missing", "missing"),
        ("visa", "wax melded out of the candle", "melded"),
        ("visa", "foreign particals on candle", "particle"),
        ("visa", "corner or edge breakage", "breakage"),
        ("visa", "weird candle wick", "weird wick"),
        ("mad_sim", "Burrs", "burrs"),
        ("mad_real", "stains", "stains"),
        ("real_iad", "AK", "pit"),
        ("real_iad", "YW", "foreign"),
        ("real_iad", "ZW", "contamination"),
    ],
)
def test_native_labels_map_to_superclasses(dataset, label, superclass):
    assert load_knowledge(dataset).superclass(label) == superclass


def test_product_defects_follow_the_multiads_tables():
    assert load_knowledge("mvtec").product_defects("bottle") == ("broken", "contamination")
    assert load_knowledge("mvtec").product_defects("toothbrush") == ("damaged",)
    assert load_knowledge("mpdd").product_defects("metal_plate") == ("rust", "scratch")
    assert load_knowledge("mpdd").product_defects("tubes") == ("flattening",)
    audiojack = load_knowledge("real_iad").product_defects("audiojack")
    assert audiojack == ("contamination", "deformation", "missing", "scratch")
    assert load_knowledge("real_iad").product_defects("mint") == ("contamination", "foreign", "missing")
    assert load_knowledge("visa").product_defects("pcb1") == ("bent", "melt", "missing", "scratch")
    assert load_knowledge("mad_real").product_defects("bird") == ("missing",)
    # the MultiADS-F vocabulary (product) is a strict part of the MultiADS one (dataset)
    mvtec = load_knowledge("mvtec")
    assert set(mvtec.vocabulary("cable")) < set(mvtec.vocabulary())


def test_product_names_drop_the_mad_folder_number():
    assert product_key("01Gorilla") == "gorilla"
    assert product_key("transistor1") == "transistor1"
    assert load_knowledge("mad_sim").product_defects("20Puppy") == ("burrs", "missing", "stains")


def test_labels_compare_without_case_or_extra_spaces():
    assert normalise_label("  Weird   Candle Wick ") == "weird candle wick"
    assert load_knowledge("mad_sim").superclass("STAINS") == "stains"


def test_visa_mask_ids_come_from_id2class():
    visa = load_knowledge("visa")
    assert visa.mask_ids("pcb4") == {
        "burnt": 1, "scratch": 2, "missing": 3, "damage": 4, "extra": 5, "wrong place": 6, "dirt": 7
    }
    assert visa.mask_ids("capsules")["misshape"] == 5


def test_mask_ids_default_to_sorted_labels():
    assert load_knowledge("mpdd").mask_ids("bracket_black") == {"hole": 1, "scratches": 2}


def test_unknown_label_error_names_label_and_dataset():
    with pytest.raises(UnknownDefectError, match=r"'dent'.*MVTec-AD"):
        load_knowledge("mvtec").superclass("dent")


def test_unknown_product_and_dataset_errors():
    with pytest.raises(KeyError, match="toaster"):
        load_knowledge("mvtec").product_defects("toaster")
    with pytest.raises(FileNotFoundError, match="no knowledge file for dataset 'kolektor'"):
        load_knowledge("kolektor")


def test_defect_words_are_the_literal_prompt_words():
    assert defect_words("faulty imprint") == "faulty imprint"
    assert defect_words("wrong place") == "wrong place"
    with pytest.raises(KeyError, match="dent"):
        defect_words("dent")


def test_multiads_templates_and_normal_states_follow_the_appendix():
    templates = multiads_templates()
    assert len(templates) == 35 and len(set(templates)) == 35
    assert templates[0] == "a bad photo of a {}." and templates[-1] == "there is a {} in the scene."
    normal = normal_state_prompts()
    assert len(normal) == 10 and normal[0] == "{}" and normal[-1] == "{} in ideal condition"


def test_every_superclass_has_multiads_phrases_with_one_placeholder():
    for name in BENCHMARKS:
        knowledge = load_knowledge(name)
        for superclass in knowledge.superclasses:
            phrases = multiads_state_prompts(superclass, name)
            assert phrases and all(p.count("{}") == 1 for p in phrases), (name, superclass)


def test_multiads_phrases_use_each_dataset_table():
    # Table 7 (MVTec-AD) and Table 6 (VisA) word "crack" differently
    assert multiads_state_prompts("crack")[1] == "a crack is present on {}"
    assert multiads_state_prompts("crack", "visa")[1] == "{} has a visible crack"
    assert multiads_state_prompts("crack", "mvtec") == multiads_state_prompts("crack")
    assert multiads_state_prompts("flattening")[0] == "{} becomes flattened"
    assert len(multiads_state_prompts("stains")) == 3


def test_seen_unseen_reproduces_dapo_table13_on_mpdd():
    marks = seen_unseen("mpdd", "mvtec")
    unseen = {d for d, seen in marks.items() if not seen}
    assert unseen == {"defective painting", "flattening", "mismatch", "rust"}


def test_seen_unseen_on_visa_and_mad():
    visa = seen_unseen("visa", "mvtec")
    # DAPO Table 2 stars these VisA types as unseen
    assert not any(visa[d] for d in ("extra", "particle", "breakage"))
    assert visa["scratch"] and visa["bent"]
    mad = seen_unseen(load_knowledge("mad_sim"), "mvtec")
    assert mad == {"burrs": False, "missing": True, "stains": True}  # stains same_as color
    # synonyms count in both directions; combined is never trained on
    back = seen_unseen("mvtec", "mad_sim")
    assert back["color"] and not back["combined"]
    assert not seen_unseen("mvtec", "visa")["combined"]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_a_knowledge_file_outside_the_package_loads_by_path(tmp_path):
    path = _write(
        tmp_path / "synthetic_demo.yaml",
        "name: synthetic_demo\nlayout: visa\nlabels: {Scratch: scratch, Hole: hole}\n"
        "products: {gear: [Scratch, Hole]}\n",
    )
    knowledge = load_knowledge(path)
    assert knowledge.products == ("gear",)
    assert knowledge.product_defects("gear") == ("hole", "scratch")
    assert knowledge.mask_ids("gear") == {"hole": 1, "scratch": 2}


@pytest.mark.parametrize(
    "text, message",
    [
        ("layout: mvtec\nlabels: {a: scratch}\nproducts: {p: [a]}\n", "lacks the `name`"),
        ("name: x\nlayout: kolektor\nlabels: {a: scratch}\nproducts: {p: [a]}\n", "layout 'kolektor'"),
        ("name: x\nlayout: mvtec\nlabels: {a: dent}\nproducts: {p: [a]}\n", r"superclasses \['dent'\]"),
        ("name: x\nlayout: mvtec\nlabels: {a: scratch}\nproducts: {p: [b]}\n", r"product labels \['b'\]"),
        ("name: x\nlayout: mvtec\nlabels: {a: scratch, A: hole}\nproducts: {p: [a]}\n", "listed twice"),
        ("name: x\nlayout: mvtec\nlabels: {a: scratch}\n", "needs `products`"),
        ("- just\n- a list\n", "mapping at top level"),
    ],
)
def test_invalid_knowledge_files_are_rejected_with_their_path(tmp_path, text, message):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError, match=message):
        load_knowledge(path)
