"""The featurize stage: data/prepared/ -> models/features/ + featurize/metrics.json.

    python pipelines/featurize.py              # reads the featurize: section of params.yaml
    dvc repro featurize

Trains the small domain network that defines the metrics' feature space (a
classifier when the prepared data has labels, an autoencoder otherwise) on the
training split and reports its validation accuracy/loss, and how far real images
blurred by 0.7 px or noised move FID above the real-vs-real floor (featurize/metrics.json,
``sensitivity/*``), with a warning line when blur barely moves it. With
``featurize.inception_weights`` set, Inception-v3 features from those weights on disk
are recorded too (checked here so a bad file fails now, not at evaluation). When the
prepared data has captions (prepare.captions), the caption encoder text-conditioned
generators read is trained here too (:mod:`gan.text_encoder`; ``text_encoder.*`` beside
the feature network, ``text/*`` in the metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gan.atomic import atomic_write_json
from gan.config import load_params
from gan.data import load_split, read_manifest
from gan.data.captions import has_captions
from gan.features import (
    file_sha256,
    load_feature_net,
    load_inception,
    resolve_inception_weights,
    save_feature_net,
    train_feature_net,
)
from gan.paths import check_outputs
from gan.sensitivity import BLUR_SIGMA, NOISE_STD, blind_spot_warning, sensitivity
from gan.stages import stage_parser
from gan.text_encoder import fit_text_encoder, save_text_encoder


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", default="models/features", help="feature network directory (default: models/features)")
    parser.add_argument("--metrics", default="featurize/metrics.json", help="validation metrics file (default: featurize/metrics.json)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg, data = params.featurize, Path(args.data or params.prepare.out)
    check_outputs({"--out": args.out, "--metrics": args.metrics},
                  {"--data": data, "featurize.inception_weights": cfg.inception_weights, "--params": args.params})

    manifest = read_manifest(data)
    inception = _inception_spec(cfg.inception_weights)  # before training: fail fast on a bad file
    train_x, train_y = load_split(data, "train")
    val_x, val_y = load_split(data, "val")
    num_classes = int(manifest.get("num_classes", 0)) if train_y is not None else 0
    net, metrics = train_feature_net(train_x, train_y, val_x, val_y, num_classes, cfg)

    spec = {
        "class_names": list(manifest.get("class_names") or []),
        "data_hash": manifest.get("hash"),
        "settings": cfg.model_dump(),
        # validation figures only: the training time goes to featurize/metrics.json, since this
        # config.json is a dependency of tune, train and evaluate and must not change run to run
        "metrics": {k: v for k, v in metrics.items() if k != "seconds"},
        "inception": inception,
    }
    text = _fit_text_encoder(net, spec, manifest, data, train_x, val_y, cfg) if has_captions(manifest) else None
    if text is not None:
        metrics.update({f"text/{k}": v for k, v in text[1]["metrics"].items()})
    save_feature_net(net, args.out, spec, also=None if text is None else lambda folder: save_text_encoder(*text, folder))
    # can this space see blur and noise at all? (report only: config.json above stays as it was)
    report = sensitivity(load_feature_net(args.out), train_x, val_x, seed=cfg.seed, batch_size=cfg.batch_size)
    metrics.update(report)
    atomic_write_json(args.metrics, metrics)
    summary = f"val_accuracy {metrics['val_accuracy']:.4f}" if "val_accuracy" in metrics else f"val_loss {metrics['val_loss']:.4f}"
    kind = "classifier" if num_classes else "autoencoder"
    extra = " + Inception-v3 features" if inception else ""
    print(f"featurize: {kind}{extra}, {summary} -> {args.out} in {metrics['seconds']:.1f}s")
    print(
        f"featurize: sensitivity: FID real-vs-real {report['sensitivity/fid_floor']:.3g}, blurred by {BLUR_SIGMA} px "
        f"{report['sensitivity/fid_blur']:.3g} ({report['sensitivity/blur_ratio']:.1f}x), noise {NOISE_STD} {report['sensitivity/fid_noise']:.3g}"
    )
    warning = blind_spot_warning(report)
    if warning:
        print(f"featurize: warning: {warning}.")
    return 0


def _fit_text_encoder(net: Any, spec: dict[str, Any], manifest: dict[str, Any], data: Path, train_x: Any, val_y: Any, cfg: Any) -> tuple[Any, dict[str, Any]]:
    """The caption encoder trained on the training captions against the new domain network's image features."""
    from gan.data import load_captions
    from gan.features import FeatureNet

    domain = FeatureNet(net, {**spec, "kind": "classifier" if net.num_classes else "autoencoder"})
    features = domain.features(train_x, batch_size=cfg.batch_size)  # [N, feature_dim]
    captions = [str(c) for c in load_captions(data, "train")]
    val = ([str(c) for c in load_captions(data, "val")], val_y)
    return fit_text_encoder(features, captions, cfg.text, seed=cfg.seed, val=val)


def _inception_spec(value: str | None) -> dict[str, str] | None:
    """``{"path", "sha256"}`` of usable Inception-v3 weights, or None when the key is unset."""
    if not value:
        return None
    path = resolve_inception_weights(value)
    load_inception(path)  # raises GanError naming the key and the file
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}

