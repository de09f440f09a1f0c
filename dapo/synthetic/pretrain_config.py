"""The settings of the compact-CLIP pretraining (:mod:`dapo.synthetic.pretrain`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dapo.synthetic.corpus import CorpusSpec


@dataclass
class PretrainConfig:
    """Hyperparameters of the two-stage pretraining (:mod:`dapo.synthetic.pretrain`).

    Stage 1 (image tower): ``image_steps`` steps at peak ``lr`` after ``warmup_steps``, cosine
    decay to ``min_lr_ratio * lr``. Stage 2 (text tower): ``text_steps`` steps at peak
    ``text_lr``, same shape of schedule; ``text_tunes_last_block``: the text stage also trains
    the last vision block and ``ln_post`` (False: LiT's locked tower). ``precision``:
    ``"bf16"`` autocast (fast on CPUs with AVX-512-BF16/AMX and on GPUs), ``"fp32"``, or
    ``"auto"`` (the machine decides; :mod:`dapo.util.precision`, as are ``device`` and the autocast).
    ``threads``: CPU threads (2 = the project's reference machine).
    """

    seed: int = 0
    image_steps: int = 3200
    full_per_step: int = 16
    local_images_per_step: int = 16
    lr: float = 1e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    aux_layer: int = 4
    dense_weight: float = 1.0
    text_steps: int = 500
    text_images: int = 16000
    text_batch: int = 256
    text_lr: float = 1e-3
    state_weight: float = 1.0
    text_tunes_last_block: bool = True
    init: str = "mimetic"
    precision: str = "bf16"
    threads: int = 2
    device: str = "auto"
    checkpoint_every: int = 100
    corpus: CorpusSpec = field(default_factory=CorpusSpec)

    def __post_init__(self) -> None:
        """Refuse a value no run can use, naming the field (a negative step count, a learning rate of 0, ...)."""
        from dapo.util.precision import PRECISIONS

        def wrong(name: str, expected: str) -> ValueError:
            return ValueError(f"PretrainConfig.{name}={getattr(self, name)!r}: expected {expected}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        minimum = {"seed": 0, "image_steps": 0, "text_steps": 0, "full_per_step": 1, "local_images_per_step": 0,
                   "warmup_steps": 0, "aux_layer": 1, "text_images": 1, "text_batch": 2, "threads": 1,
                   "checkpoint_every": 1}
        for name, low in minimum.items():
            if not is_int(getattr(self, name)) or getattr(self, name) < low:
                raise wrong(name, f"an integer >= {low}")
        if self.image_steps + self.text_steps < 1:
            raise ValueError("PretrainConfig: image_steps + text_steps must be >= 1 (nothing to train)")
        for name in ("lr", "text_lr", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise wrong(name, "a finite number > 0")
        for name in ("min_lr_ratio", "weight_decay", "dense_weight", "state_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise wrong(name, "a finite number >= 0")
        if self.min_lr_ratio > 1:
            raise wrong("min_lr_ratio", "a number in [0, 1]")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise wrong("betas", "two numbers in [0, 1), e.g. (0.9, 0.98)")
        if self.init not in ("mimetic", "openclip"):
            raise wrong("init", "'mimetic' or 'openclip'")
        if self.precision not in PRECISIONS:
            raise wrong("precision", f"one of {', '.join(map(repr, PRECISIONS))}")
        if not isinstance(self.text_tunes_last_block, bool):
            raise wrong("text_tunes_last_block", "True or False")

    @property
    def steps(self) -> int:
        return self.image_steps + self.text_steps


def target_only_defects() -> tuple[str, ...]:
    """The defect types of the target worlds that the source world (DAPO's training world) lacks:
    the rows marked ``*`` (unseen) in notebooks 00 and 03, read from the worlds' knowledge files
    (:func:`dapo.data.knowledge.seen_unseen`)."""
    from dapo.data.knowledge import seen_unseen
    from dapo.synthetic.worlds import SOURCE_WORLD, TARGET_WORLDS

    return tuple(sorted({defect for target in TARGET_WORLDS
                         for defect, seen in seen_unseen(target, SOURCE_WORLD).items() if not seen}))


@dataclass
class HeldoutPretrainConfig(PretrainConfig):
    """The pretraining with ``heldout_defects`` (default: :func:`target_only_defects`) kept out of the
    supervised image stage: no image showing one of them is drawn there (each is replaced by the
    next image of its stream without them, :func:`dapo.synthetic.pretrain_data.step_views`), so the
    state and patch heads never get a label of these types and the image tower never sees them
    under supervision. The text stage is unchanged: the types still appear in its images and
    captions, as a web-trained CLIP meets words it never had patch labels for. A subclass, so that
    the default recipe (and the committed backbone's recorded config) stays as it was.

    Run (not run for the committed results; about the hour of the default recipe)::

        python scripts/pretrain_compact_clip.py --heldout-target-only \\
            --output dapo/assets/dapo-compact-heldout.safetensors --run-dir runs/pretrain_compact_heldout
    """

    heldout_defects: tuple[str, ...] = field(default_factory=target_only_defects)

    def __post_init__(self) -> None:
        from dapo.synthetic.corpus import DEFECT_ORDER

        unknown = sorted(set(self.heldout_defects) - set(DEFECT_ORDER))
        if unknown:
            raise ValueError(f"HeldoutPretrainConfig.heldout_defects: unknown defect types {unknown}; "
                             f"known: {list(DEFECT_ORDER)}")
        self.heldout_defects = tuple(self.heldout_defects)
