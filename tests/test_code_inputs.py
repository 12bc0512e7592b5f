"""Code inputs of the workflow's steps: the package files a step script imports, followed
transitively, so that editing a module (or a template) a step uses reruns that step and editing
anything else does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitct.pipeline.code_inputs import code_files

REPO = Path(__file__).resolve().parent.parent


def make_tree(root: Path, files: dict[str, str]) -> None:
    """Write `files` (relative path -> text) under `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """A small fake package `fakepkg` under tmp_path/src, with modules that import each other."""
    make_tree(
        tmp_path / "src",
        {
            "fakepkg/__init__.py": "",
            "fakepkg/top.py": "from fakepkg.sub import leaf\n",
            "fakepkg/unused.py": "import fakepkg.top\n",
            "fakepkg/sub/__init__.py": "NAME = 1\n",
            "fakepkg/sub/leaf.py": "import os\nimport numpy\n",
            "fakepkg/sub/other.py": "",
            "fakepkg/sub/deep/__init__.py": "",
            "fakepkg/sub/deep/mod.py": "",
            "fakepkg/lazy.py": "def f():\n    import fakepkg.sub.other\n",
        },
    )
    return tmp_path / "src" / "fakepkg"


def files_for(tmp_path: Path, pkg: Path, script_text: str) -> set[str]:
    """The code files of a script with `script_text`, relative to the package folder."""
    script = tmp_path / "workflow" / "scripts" / "step.py"
    make_tree(tmp_path, {"workflow/scripts/step.py": script_text})
    return {Path(p).relative_to(pkg).as_posix() for p in code_files(script, pkg)}


def test_direct_and_transitive_imports(tmp_path, pkg):
    files = files_for(tmp_path, pkg, "from fakepkg import top\n")
    assert files == {"__init__.py", "top.py", "sub/__init__.py", "sub/leaf.py"}


def test_unrelated_modules_excluded(tmp_path, pkg):
    files = files_for(tmp_path, pkg, "import fakepkg.sub.leaf\nimport json\n")
    assert files == {"__init__.py", "sub/__init__.py", "sub/leaf.py"}


def test_parent_init_files_included(tmp_path, pkg):
    files = files_for(tmp_path, pkg, "import fakepkg.sub.deep.mod as m\n")
    assert files == {"__init__.py", "sub/__init__.py", "sub/deep/__init__.py", "sub/deep/mod.py"}


def test_imports_inside_functions(tmp_path, pkg):
    files = files_for(tmp_path, pkg, "def main():\n    from fakepkg import lazy\n")
    assert "lazy.py" in files
    assert "sub/other.py" in files  # lazy imports it inside a function in turn


def test_from_package_import_submodule_or_name(tmp_path, pkg):
    assert files_for(tmp_path, pkg, "from fakepkg.sub import other\n") == {
        "__init__.py",
        "sub/__init__.py",
        "sub/other.py",
    }
    # NAME is defined in sub/__init__.py: no module of that name.
    assert files_for(tmp_path, pkg, "from fakepkg.sub import NAME\n") == {
        "__init__.py",
        "sub/__init__.py",
    }
    # A name inside a plain module: only that module (and its parents).
    assert files_for(tmp_path, pkg, "from fakepkg.sub.leaf import something\n") == {
        "__init__.py",
        "sub/__init__.py",
        "sub/leaf.py",
    }


def test_relative_imports(tmp_path, pkg):
    make_tree(
        pkg,
        {
            "rel/__init__.py": "from . import a\n",
            "rel/a.py": "from .b import thing\nfrom ..sub import other\n",
            "rel/b.py": "from .inner import c\n",
            "rel/inner/__init__.py": "",
            "rel/inner/c.py": "from ... import top\nfrom .... import beyond\n",
        },
    )
    files = files_for(tmp_path, pkg, "import fakepkg.rel\n")
    assert files == {
        "__init__.py",
        "rel/__init__.py",
        "rel/a.py",
        "rel/b.py",
        "rel/inner/__init__.py",
        "rel/inner/c.py",
        "sub/__init__.py",
        "sub/other.py",
        "top.py",
        "sub/leaf.py",  # through top
    }


def test_other_top_level_packages_ignored(tmp_path, pkg):
    make_tree(tmp_path / "src", {"otherpkg/__init__.py": "", "otherpkg/top.py": ""})
    assert files_for(tmp_path, pkg, "import otherpkg.top\nfrom otherpkg import top\n") == set()


def test_missing_module_is_its_package(tmp_path, pkg):
    files = files_for(tmp_path, pkg, "import fakepkg.sub.nothing.deeper\n")
    assert files == {"__init__.py", "sub/__init__.py"}


def test_templates_named_in_string_literals(tmp_path, pkg):
    make_tree(
        pkg,
        {
            "render.py": 'def page(env):\n    return env.get_template("report.html")\n',
            "templates/report.html": "<html></html>",
            "templates/other.html": "<html></html>",
            "sub/templates/nested/report.html": "<p></p>",
            "sub/templates/nested/unused.css": "",
        },
    )
    files = files_for(tmp_path, pkg, "from fakepkg import render\n")
    assert "templates/report.html" in files
    assert "sub/templates/nested/report.html" in files  # same file name, any depth
    assert "templates/other.html" not in files
    assert "sub/templates/nested/unused.css" not in files
    # A template named only by a module the script does not use is not included.
    assert "templates/report.html" not in files_for(tmp_path, pkg, "import fakepkg.top\n")


def test_script_itself_not_listed_and_paths_built_on_package_dir(tmp_path, pkg):
    script = tmp_path / "step.py"
    script.write_text("import fakepkg.top\n")
    files = code_files(str(script), str(pkg))
    assert str(script) not in files
    assert files == sorted(files)
    assert all(Path(p).is_file() and p.startswith(str(pkg)) for p in files)
    assert len(files) == len(set(files))


def test_missing_script_raises_with_its_path(tmp_path, pkg):
    missing = tmp_path / "workflow" / "scripts" / "nope.py"
    with pytest.raises(ValueError, match="nope.py"):
        code_files(missing, pkg)


def test_cycles_terminate(tmp_path, pkg):
    make_tree(
        pkg,
        {
            "cyc/__init__.py": "from . import a\n",
            "cyc/a.py": "from .b import x\n",
            "cyc/b.py": "from fakepkg.cyc import a\nimport fakepkg.cyc\n",
        },
    )
    files = files_for(tmp_path, pkg, "from fakepkg.cyc.b import x\n")
    assert files == {"__init__.py", "cyc/__init__.py", "cyc/a.py", "cyc/b.py"}


def test_changed_file_is_parsed_again(tmp_path, pkg):
    assert "sub/other.py" not in files_for(tmp_path, pkg, "import fakepkg.top\n")
    (pkg / "top.py").write_text("from fakepkg.sub import leaf\nimport fakepkg.sub.other  # new\n")
    assert "sub/other.py" in files_for(tmp_path, pkg, "import fakepkg.top\n")


def test_real_step_scripts_import_only_existing_package_files():
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    if not scripts:
        pytest.skip("no step scripts under workflow/scripts")
    package_dir = REPO / "src" / "vitct"
    inputs = {}
    for script in scripts:
        files = code_files(script, package_dir)
        for path in files:
            assert Path(path).is_file(), (script.name, path)
            assert Path(path).resolve().is_relative_to(package_dir.resolve()), (script.name, path)
        inputs[script.name] = {Path(p).relative_to(package_dir).as_posix() for p in files}
    # Followed into the sub-packages, and no further than the script's imports reach.
    train = inputs["train.py"]
    assert {"training/loop.py", "model/vit.py", "pipeline/harness.py"} <= train
    assert "pipeline/report.py" not in train and "prediction/predictor.py" not in train
    assert "pipeline/templates/report.html" in inputs["report.py"]
