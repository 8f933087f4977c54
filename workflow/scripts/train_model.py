"""Train one small model of the offline benchmark and save its checked checkpoint."""

from backsal.experiments import TrainSettings, open_dataset
from backsal.experiments.job import Job, read_descriptor
from backsal.models.train import TrainConfig, build_small_model, save_checkpoint, train_model
from backsal.provenance import provenance_from_snakemake, write_json

job = Job(snakemake)
with job.logged():
    entry = job.params.entry
    settings = TrainSettings.from_params(job.params.settings)
    train_set = read_descriptor(snakemake.input.train)
    test_set = read_descriptor(snakemake.input.test)
    train = open_dataset(train_set["name"], train_set["entry"], job.resources)
    test = open_dataset(test_set["name"], test_set["entry"], job.resources)
    config = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=int(job.params.seed),
    )
    model = build_small_model(entry["arch"], num_classes=train.num_classes, seed=config.seed)
    result = train_model(
        model, train.images, train.labels, config, test=(test.images, test.labels), log=print
    )
    print(f"test mAP {result.test_map:.4f} after {result.seconds:.1f} s")
    sha256 = save_checkpoint(
        snakemake.output.checkpoint,
        model,
        model_name=entry["arch"],
        num_classes=train.num_classes,
        config=config,
        data_hash=train.content_hash,
        metrics={"test_map": float(result.test_map)},  # no time: the same training, the same bytes
    )
    descriptor = {
        "name": snakemake.wildcards.model,
        "entry": dict(entry),
        "arch": entry["arch"],
        "checkpoint": str(snakemake.output.checkpoint),
        "checksum": f"sha256:{sha256}",
        "test_map": float(result.test_map),
        "train_seconds": result.seconds,
        "epoch_losses": result.epoch_losses,
    }
    checksums = {
        f"dataset:{train_set['name']}": train_set["checksum"],
        f"dataset:{test_set['name']}": test_set["checksum"],
    }
    write_json(
        descriptor,
        snakemake.output.descriptor,
        provenance_from_snakemake(snakemake, checksums, {"seed": config.seed}),
    )
