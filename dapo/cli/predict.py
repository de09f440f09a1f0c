"""``dapo predict``: anomaly maps, per-type masks, overlays and one table for one's own images.

Images are decoded by :func:`dapo.data.read_rgb` (grey, alpha, palette and 16-bit files are
converted, each kind stated once); a file it cannot read is reported by path and skipped, the
other images' outputs are written, and the command exits with status 1 at the end. Inference
is batched through :class:`dapo.engine.inference.Predictor` (text embeddings computed once).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dapo.cli.common import (
    DEFAULT_CHECKPOINT,
    HelpFormatter,
    UsageError,
    add_backbone_arguments,
    add_method_argument,
    add_run_arguments,
    argument_errors,
    load_model,
    one_line,
    prepare_out,
    probability,
    resolve_device_argument,
)
from dapo.cli.outputs import (
    MAX_CLASSES,
    area_fractions,
    prediction_row,
    write_image_outputs,
    write_legend,
    write_predictions,
)
from dapo.util.paths import shown_path

PREDICTIONS_CSV = "predictions.csv"
LISTED = 10  # skipped images named again in the closing error line
DESCRIPTION = """\
Predict anomaly maps and per-defect-type masks for images, with any list of defect names.

For every image (files, or folders searched recursively) it writes, under --out, mirroring the
images' folders: NAME_anomaly.png (grey, 255 * anomaly probability), NAME_types.png (indexed PNG:
pixel value k = class k of legend.csv, 0 = normal), NAME_overlay.png (defect pixels tinted in the
legend colours); and once: predictions.csv (path, image_score, prob_<defect> = the image-level
probability of each defect (Eq. 11), predicted_types = defects with prob > --type-threshold,
area_<defect> = fraction of the image's pixels of that type, the files), legend.csv, legend.png.
"""
EPILOG = """\
examples:
  dapo predict photos/ --defects "scratch,hole,stain" --out predictions/
  dapo predict part.png --defects "crack,rust" --product "metal plate" --checkpoint run/epoch_005.safetensors
  dapo predict photos/ --defects scratch --backbone ViT-L-14-336 --pretrained openai \\
      --clip-weights /models/open_clip_ViT-L-14-336_openai.safetensors --checkpoint paper_run/epoch_005.safetensors
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("predict", help="anomaly maps, per-type masks and a table for images",
                                   description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively; "
                        "hidden files and the --out folder skipped)")
    parser.add_argument("--defects", required=True, metavar="NAMES",
                        help='comma-separated defect names, e.g. "scratch,hole,stain": any words, no retraining')
    parser.add_argument("--product", metavar="NAME", help="product name, for methods with handcrafted prompts "
                        "that name it (MultiADS, CLIP-AC); DAPO's learned prompts ignore it (default: none)")
    parser.add_argument("--checkpoint", metavar="PATH", help=f"trained checkpoint (.safetensors) (default: the "
                        f"synthetic-profile DAPO checkpoint, {shown_path(DEFAULT_CHECKPOINT)} in the repository)")
    parser.add_argument("--out", metavar="DIR", default="predictions", help="output folder")
    parser.add_argument("--type-threshold", type=probability, default=0.5, metavar="P",
                        help="a defect is predicted for an image when its Eq. 11 probability exceeds P")
    add_method_argument(parser)
    add_backbone_arguments(parser, from_checkpoint=True)
    add_run_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def parse_defects(text: str) -> tuple[str, ...]:
    """``--defects`` as a checked vocabulary (empty, duplicate and reserved names refused)."""
    from dapo.clip.vocabulary import check_vocabulary
    from dapo.data.folder import FolderLayoutError, check_not_normal

    names = [name.strip() for name in text.split(",")]
    with argument_errors("--defects", ValueError, TypeError):
        vocabulary = check_vocabulary(names, source="--defects")
    with argument_errors("--defects", FolderLayoutError):
        check_not_normal(vocabulary, "")
    if len(vocabulary) >= MAX_CLASSES:
        raise UsageError(f"--defects: {len(vocabulary)} names; at most {MAX_CLASSES - 1} fit the indexed type masks")
    return vocabulary


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def collect_images(arguments: Sequence[str], out: Path) -> list[Path]:
    """Files as given and the images of folders (recursively), in order, each once; images under
    ``out`` are skipped (earlier outputs are not inputs). An empty folder is an error."""
    from dapo.data.base import IMAGE_SUFFIXES
    from dapo.data.folder import list_images

    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            images = [p for p in list_images(path) if not _inside(p, out)]
            if not images:
                raise UsageError(f"IMAGES {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}, "
                                 f"searched recursively)")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"IMAGES {path}: no such file or folder")
    seen: set[str] = set()
    unique = []
    for path in found:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return unique


def output_names(paths: Sequence[Path]) -> list[str]:
    """Relative output names (no suffix) mirroring the images' folders below their common folder;
    ``a.png`` and ``a.jpg`` side by side become ``a_png`` and ``a_jpg``."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    relative = [p.relative_to(base) for p in absolute]
    plain = [r.with_suffix("").as_posix() for r in relative]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 else f"{name}_{r.suffix.lstrip('.').lower()}" for name, r in zip(plain, relative)]


class ImageFiles(Dataset):
    """Images as model inputs with their decoded pixels, or the reason they cannot be read."""

    def __init__(self, paths: Sequence[Path], size: int, mean, std) -> None:
        self.paths, self.size, self.mean, self.std = list(paths), size, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from dapo.data.images import CorruptImageError, check_geometry, clip_tensor, read_rgb

        try:
            rgb = read_rgb(self.paths[index])
        except (CorruptImageError, Image.DecompressionBombError) as error:
            return {"index": index, "error": one_line(error)}
        check_geometry(self.paths[index], rgb.shape, self.size)
        return {"index": index, "rgb": rgb, "image": clip_tensor(rgb, self.size, self.mean, self.std)}


def run(args: argparse.Namespace) -> int:
    from dapo.clip.vocabulary import PromptTooLongError
    from dapo.engine.inference import Predictor

    vocabulary = parse_defects(args.defects)
    paths = collect_images(args.images, Path(args.out))
    out = prepare_out(args.out)
    names = output_names(paths)
    device = resolve_device_argument(args.device)
    model, _, checkpoint = load_model(args, device)
    with argument_errors("--defects", PromptTooLongError):
        predictor = Predictor(model, vocabulary, product=args.product)
    class_names = predictor.class_names
    print(f"dapo predict: {len(paths)} image(s), {model.config.name} from {checkpoint} on {model.backbone.model_name}"
          f"/{model.backbone.pretrained} at {model.backbone.image_size} px, {device}; classes: "
          f"{', '.join(class_names)}", file=sys.stderr)
    files = ImageFiles(paths, model.backbone.image_size, model.backbone.mean, model.backbone.std)
    loader = DataLoader(files, batch_size=args.batch_size, num_workers=args.workers, collate_fn=list)
    rows, skipped = [], []
    started = time.perf_counter()
    with tqdm(total=len(paths), desc="predict", unit="img", disable=args.no_progress, file=sys.stderr) as bar:
        for batch in loader:
            readable = [item for item in batch if "error" not in item]
            for item in batch:
                if "error" in item:
                    skipped.append(paths[item["index"]])
                    tqdm.write(f"dapo predict: skipped {paths[item['index']]}: {item['error']}", file=sys.stderr)
            if readable:
                pred = predictor(torch.stack([item["image"] for item in readable]))
                scores = pred.image_score.float().cpu().numpy()
                maps = pred.anomaly_map.float().cpu().numpy()
                masks = pred.type_mask.cpu().numpy()
                probs = pred.defect_probs.float().cpu().numpy()
                for j, item in enumerate(readable):
                    index = item["index"]
                    written, ids = write_image_outputs(out, names[index], item["rgb"], maps[j], masks[j], class_names)
                    rows.append(prediction_row(str(paths[index]), scores[j], probs[j],
                                               area_fractions(ids, len(class_names)), vocabulary,
                                               args.type_threshold, written))
            bar.update(len(batch))
    elapsed = time.perf_counter() - started
    table = write_predictions(out / PREDICTIONS_CSV, rows, vocabulary)
    write_legend(out, class_names)
    rate = len(rows) / elapsed if elapsed > 0 else float("nan")
    print(f"dapo predict: wrote {len(rows)} prediction(s) to {table} ({rate:.1f} images/s)", file=sys.stderr)
    if skipped:
        listed = ", ".join(map(str, skipped[:LISTED])) + (f" and {len(skipped) - LISTED} more" if len(skipped) > LISTED
                                                          else "")
        print(f"dapo predict: error: {len(skipped)} of {len(paths)} image(s) could not be read and were skipped "
              f"(each reported above): {listed}", file=sys.stderr)
        return 1
    return 0
