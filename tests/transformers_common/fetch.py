"""Assemble transformers' own common model tests for the installed transformers version, for `make
test-transformers`.

    python tests/transformers_common/fetch.py build/transformers-tests   # prints the folder to put on sys.path

The source distribution of the installed version (`pip download --no-deps --no-binary :all: transformers==X`) holds
`tests/test_modeling_common.py` (`ModelTesterMixin`) and `tests/test_configuration_common.py` (`ConfigTester`), but
not the modules they import from the rest of transformers' test tree (the export and generation tester mixins, the
common config kwargs): this project's own small stand-ins (stand_ins/) take their place. The two files and the
stand-ins become the package `tf_common` in OUTPUT/<version>/; a second call reuses it.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import transformers


HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = ("test_modeling_common.py", "test_configuration_common.py")
# stand-in file -> where the common tests import it from
STAND_INS = {
    "export.py": "exporters/test_export.py",
    "generation.py": "generation/test_utils.py",
    "configuration_kwargs.py": "utils/test_configuration_utils.py",
}


def assemble(output: str) -> str:
    version = transformers.__version__
    folder = os.path.join(os.path.abspath(output), version)
    package = os.path.join(folder, "tf_common")
    if not all(os.path.isfile(os.path.join(package, name)) for name in COMMON):
        with tempfile.TemporaryDirectory() as download:
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            subprocess.run([*command, f"transformers=={version}", "-d", download], check=True)
            (archive,) = [name for name in os.listdir(download) if name.endswith(".tar.gz")]
            os.makedirs(package, exist_ok=True)
            with tarfile.open(os.path.join(download, archive)) as sdist:
                for name in COMMON:
                    member = sdist.getmember(f"{archive[: -len('.tar.gz')]}/tests/{name}")
                    with sdist.extractfile(member) as source, open(os.path.join(package, name), "wb") as target:
                        shutil.copyfileobj(source, target)
    for stand_in, target in STAND_INS.items():
        os.makedirs(os.path.join(package, os.path.dirname(target)), exist_ok=True)
        open(os.path.join(package, os.path.dirname(target), "__init__.py"), "a").close()
        shutil.copy(os.path.join(HERE, "stand_ins", stand_in), os.path.join(package, target))
    open(os.path.join(package, "__init__.py"), "a").close()
    return folder


if __name__ == "__main__":
    print(assemble(sys.argv[1] if len(sys.argv) > 1 else "build/transformers-tests"))
