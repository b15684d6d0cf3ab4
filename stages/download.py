"""Stage download: bring the movies in (synthetic sample, MovieScenes archive or local files),
validate them and convert them to the safe .npy format under --out."""

import _venv  # noqa: F401  (first: one line, not a traceback, when .venv is not active)

from pathlib import Path

from sceneseg.data.sources import SyntheticSpec, check_source, materialize
from sceneseg.stage import run, stage_args


def main(args, params) -> None:
    d = params.data
    check_source(d.source, d.path)
    summary = materialize(
        d.source, Path(args.out), path=d.path, gdrive_id=d.gdrive_id, url=d.url,
        cache_dir=Path(d.cache_dir).expanduser(), timeout_s=d.timeout_s, retries=d.retries,
        synthetic=SyntheticSpec(**vars(d.synthetic)), video=d.video,
    )
    print(f"download: {summary}")


if __name__ == "__main__":
    run(main, stage_args(__doc__, ["out"]))
