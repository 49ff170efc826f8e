"""The runtime's embeddings on emulated arm64 (qemu-user) against the same artifacts on this host.

Sets up, once, under ``build/arm/``: an arm64 CPython from Debian's packages (``apt-get
download``, unpacked with ``dpkg -x`` into a sysroot that ``qemu-aarch64 -L`` runs it in; on
Debian 12 that is Python 3.11, as on Raspberry Pi OS Bookworm) and the aarch64 wheels of numpy,
pillow, tqdm, onnxruntime and ai-edge-litert at the versions installed in this venv (``pip
download --platform manylinux_2_*_aarch64``); edgerec itself is the checkout, mapped as
``pip install -e .`` maps it. Then it embeds the same sample photos with every encoder artifact
of each bundle, natively (the x86-64 reference) and under ``qemu-aarch64 -cpu cortex-a72`` (a
Pi 4's core, no dot-product instructions) and ``-cpu cortex-a76`` (a Pi 5's, with them), each
side through ``edgerec.sdk.Encoder`` at 1 thread, and compares each emulated vector with the
native vector of the same artifact (same sha256): cosine min/mean, largest coordinate
difference, top-5 neighbour overlap within the set. Target: cosine >= 0.9999 for fp32; int8
is reported as measured. Timings under emulation mean nothing, so none are taken.

    make arm-check                       # teacher + student bundle; writes results/arm_emulated.*
    python benchmarks/arm_emulated.py --bundle DIR [--bundle DIR ...] [--per-label 3]
        [--cpu cortex-a72 --cpu cortex-a76]

Bundles by default: the shipped teacher wrapped as a bundle (uint8 TFLite), and the first of
``examples/models/*``, ``build/shipped/clothing-student``, ``build/arm/quick-student`` that
exists (the last is made with ``edgerec export --quick`` when the export extra is installed).

Needs Debian (apt, dpkg) and root the first time: it installs ``qemu-user-static``, adds the
arm64 architecture to dpkg (``dpkg --add-architecture arm64``; afterwards ``apt-get update``
also fetches arm64 package lists) and downloads from Debian and PyPI. Later runs reuse it.

qemu-user shows the program the host's ``/proc/cpuinfo`` (an x86 one), on which the cpuinfo
library inside onnxruntime and XNNPACK crashes (SIGSEGV while importing onnxruntime); the
sysroot therefore holds a ``proc/cpuinfo`` of the emulated core, which ``-L`` serves instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARM = ROOT / "build" / "arm"
SYSROOT = ARM / "sysroot"
SAMPLE = ROOT / "examples" / "sample"
TEACHER = SAMPLE / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
REQUIREMENTS = ["numpy", "pillow", "tqdm", "onnxruntime", "ai-edge-litert"]
ENGINE_WHEEL = {"onnx": "onnxruntime", "tflite": "ai-edge-litert"}
FP32_TARGET = 0.9999
RAW = "__engine"  # key suffix: the engine's output before the Encoder's whitening

# What a Raspberry Pi's kernel shows in /proc/cpuinfo for each core qemu can emulate
# (implementer, variant, part, revision, features).
CPUS = {
    "cortex-a72": ("Raspberry Pi 4 (Cortex-A72)", "0x41", "0x0", "0xd08", "3",
                   "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("Raspberry Pi 5 (Cortex-A76)", "0x41", "0x4", "0xd0b", "1",
                   "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                   "asimdrdm lrcpc dcpop asimddp"),
}


# --------------------------------------------------------------------------- the worker
# Runs on both sides (this venv, and the arm64 Python under qemu): numpy and edgerec only.

def worker(jobs_path: str) -> None:
    """Embed ``jobs["images"]`` with each job's artifact; write one .npz, print facts as JSON."""
    from importlib.metadata import version

    from edgerec.runtimes import engine_versions
    from edgerec.sdk import Encoder, EncoderOptions

    jobs = json.loads(Path(jobs_path).read_text())
    vectors, done, failed = {}, [], {}
    for job in jobs["jobs"]:
        key = f"{job['engine']}-{job['precision']}"
        options = EncoderOptions(engine=job["engine"], precision=job["precision"], num_threads=1)
        try:
            with Encoder.create_from_bundle_path(job["bundle"], options) as enc:
                vectors[key] = enc.embed(jobs["images"])
                if enc.whitening is not None:  # also the engine's output, before whitening
                    vectors[key + RAW] = _engine_output(enc, jobs["images"])
                done.append({"key": key, "file": enc.artifact.file,
                             "sha256": enc.artifact.sha256})
        except Exception as exc:  # report it, go on with the other artifacts
            failed[key] = f"{type(exc).__name__}: {exc}"
        print(f"  {platform.machine()} {key}: {'failed' if key in failed else 'done'}",
              file=sys.stderr, flush=True)
    np.savez(jobs["out"], **vectors)
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": version("pillow"),
        "engines": engine_versions(),
        "done": done,
        "failed": failed,
    }))


def _engine_output(enc, images: list[str]) -> np.ndarray:
    """The artifact's raw (N, D) output for ``images``: what the Encoder whitens."""
    from edgerec.runtimes import RuntimeOptions, open_runtime

    runtime = open_runtime(enc.bundle.read_artifact(enc.artifact), enc.artifact.engine,
                           RuntimeOptions(num_threads=1))
    try:
        out = runtime.run({enc.artifact.inputs[0].name: enc.preprocess(images)})
    finally:
        runtime.close()
    return out[enc.artifact.output].reshape(len(images), -1)


# --------------------------------------------------------------------------- set-up

def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


def _out(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True).stdout


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"arm_emulated: {what} needs root (apt-get, dpkg); run it as root once, "
                         "or run those steps by hand (see this script's docstring).")


def ensure_qemu() -> str:
    """The qemu-aarch64 user-mode emulator; installs Debian's qemu-user-static if absent."""
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if shutil.which(name):
            return shutil.which(name)
    if not shutil.which("apt-get"):
        raise SystemExit("arm_emulated: no qemu-aarch64 and no apt-get; install qemu-user.")
    _need_root("installing qemu-user-static")
    _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
    _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], stdout=subprocess.DEVNULL)
    return shutil.which("qemu-aarch64-static")


def _arm64_packages() -> list[str]:
    """Debian's default python3.X for arm64 and everything it needs at run time, plus
    libstdc++ (the engines are C++); dpkg, tar and the like are left out."""
    show = _out(["apt-cache", "show", "--no-all-versions", "python3-minimal:arm64"])
    depends = [d.split()[0] for line in show.splitlines()
               if line.startswith(("Depends:", "Pre-Depends:"))
               for d in line.split(":", 1)[1].split(",")]
    minor = next(d for d in depends if d.startswith("python3.")).removesuffix("-minimal")
    tree = _out(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                 "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                 f"{minor}:arm64", "libstdc++6:arm64"])
    skip = ("dpkg:", "tar:", "install-info:", "debconf:", "perl")
    return sorted({line.strip() for line in tree.splitlines()
                   if line.endswith(":arm64") and not line.startswith((" ", "<"))
                   and not line.startswith(skip)})


def ensure_sysroot() -> Path:
    """``build/arm/sysroot`` with an arm64 CPython from Debian; returns its interpreter."""
    stamp = SYSROOT / ".edgerec-ready"
    if stamp.exists():
        return SYSROOT / json.loads(stamp.read_text())["python"]
    _need_root("the arm64 sysroot")
    if "arm64" not in _out(["dpkg", "--print-foreign-architectures"]).split():
        _run(["dpkg", "--add-architecture", "arm64"])
        _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
    try:
        packages = _arm64_packages()
    except (subprocess.CalledProcessError, StopIteration):
        _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        packages = _arm64_packages()
    debs = ARM / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    _run(["apt-get", "download", "-q", *packages], cwd=debs, stdout=subprocess.DEVNULL,
         stderr=subprocess.DEVNULL)
    shutil.rmtree(SYSROOT, ignore_errors=True)
    SYSROOT.mkdir(parents=True)
    versions = {}
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", deb, SYSROOT])
        name, ver = _out(["dpkg-deb", "-f", str(deb), "Package", "Version"]).split("\n")[:2]
        versions[name.split(": ")[1]] = ver.split(": ")[1]
    python = next(p for p in sorted((SYSROOT / "usr/bin").glob("python3.*"))
                  if p.name.replace("python3.", "").isdigit())
    stamp.write_text(json.dumps({"python": str(python.relative_to(SYSROOT)),
                                 "debian_packages": versions}, indent=1))
    return python


def _glibc_minor() -> int:
    stamp = json.loads((SYSROOT / ".edgerec-ready").read_text())
    return int(stamp["debian_packages"]["libc6"].split("-")[0].split(".")[1])


def ensure_wheels(python_minor: str) -> tuple[Path, dict[str, str]]:
    """aarch64 wheels of REQUIREMENTS (pinned to this venv's versions) installed with ``pip
    install --target``; returns the folder and {requirement: why} for any without a wheel."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    site = ARM / f"site-cp{python_minor.replace('.', '')}"
    stamp = site / ".edgerec-ready"
    if stamp.exists() and json.loads(stamp.read_text())["pins"] == pins:
        return site, json.loads(stamp.read_text())["missing"]
    tags = ["--only-binary=:all:", "--python-version", python_minor, "--implementation", "cp",
            "--abi", f"cp{python_minor.replace('.', '')}", "--abi", "abi3", "--abi", "none",
            "--platform", "manylinux2014_aarch64"]
    for minor in range(17, _glibc_minor() + 1):  # pip does not widen manylinux_2_X by itself
        tags += ["--platform", f"manylinux_2_{minor}_aarch64"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels, missing, found = ARM / "wheels", {}, []
    for pin in pins:  # one at a time, so that an engine without a wheel drops only itself
        got = subprocess.run([*pip, "download", *tags, "-d", str(wheels), pin], text=True,
                             capture_output=True)
        if got.returncode:
            last = [line for line in got.stderr.splitlines() if "ERROR" in line][-1:]
            missing[pin] = (last[0] if last else got.stderr.strip()[-300:])
        else:
            found.append(pin)
    shutil.rmtree(site, ignore_errors=True)
    _run([*pip, "install", "--no-warn-conflicts", "--target", site, "--no-index",
          "--find-links", wheels, *tags, *found])
    stamp.write_text(json.dumps({"pins": pins, "missing": missing}, indent=1))
    return site, missing


def ensure_source() -> Path:
    """``build/arm/src/edgerec/<pkg>`` links to the checkout, as pyproject's package-dir maps
    them, so that the arm64 Python imports exactly this tree."""
    src = ARM / "src" / "edgerec"
    src.mkdir(parents=True, exist_ok=True)
    try:
        import tomllib

        mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "package-dir"]
    except ImportError:  # Python < 3.11
        mapping = {"edgerec.sdk": "sdk", "edgerec.runtimes": "runtimes"}
    for package, folder in mapping.items():
        if package.count(".") == 1 and package != "edgerec.export":  # the device needs no export
            link = src / package.split(".")[1]
            if not link.is_symlink():
                link.symlink_to(ROOT / folder, target_is_directory=True)
    return src.parent


def write_cpuinfo(cpu: str) -> None:
    """``sysroot/proc/cpuinfo`` for the emulated core (see the docstring: why)."""
    _, implementer, variant, part, revision, features = CPUS[cpu]
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
             f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
             f"CPU revision\t: {revision}\n")
    text = "\n".join(f"processor\t: {i}\n{block}" for i in range(os.cpu_count() or 1))
    (SYSROOT / "proc").mkdir(exist_ok=True)
    (SYSROOT / "proc" / "cpuinfo").write_text(text)


# --------------------------------------------------------------------------- bundles, images

def default_bundles() -> list[Path]:
    teacher = ARM / "teacher-bundle"
    if not (teacher / "manifest.json").exists():
        _run([Path(sys.executable).with_name("edgerec"), "bundle", "import", TEACHER,
              "--out", teacher, "--raw-pixels", "--force"], stdout=subprocess.DEVNULL)
    students = [*sorted((ROOT / "examples" / "models").glob("*/manifest.json")),
                ROOT / "build/shipped/clothing-student/manifest.json",
                ARM / "quick-student/manifest.json"]
    student = next((m.parent for m in students if m.exists()), None)
    if student is None:
        try:
            _run([Path(sys.executable).with_name("edgerec"), "export", "--images",
                  SAMPLE / "images", "--out", ARM / "quick-student", "--quick", "--force"])
            student = ARM / "quick-student"
        except subprocess.CalledProcessError:
            print("arm_emulated: no student bundle and no export extra to make one "
                  "(`pip install -e '.[export]'`); checking the teacher only.", file=sys.stderr)
    return [teacher] + ([student] if student else [])


def sample_images(per_label: int) -> list[str]:
    labels = sorted(p for p in (SAMPLE / "images").iterdir() if p.is_dir())
    return [str(p) for d in labels for p in sorted(d.glob("*.jpg"))[:per_label]]


def encoder_artifacts(bundle: Path) -> list[dict]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return [a for a in manifest["artifacts"] if a["role"] == "encoder"]


# --------------------------------------------------------------------------- the comparison

def run_side(cmd: list[str], env: dict[str, str], bundle: Path, images: list[str],
             engines: set[str], tmp: Path, tag: str) -> tuple[dict, dict[str, np.ndarray]]:
    jobs = [{"bundle": str(bundle), "engine": a["engine"], "precision": a["precision"]}
            for a in encoder_artifacts(bundle) if a["engine"] in engines]
    out = tmp / f"{tag}.npz"
    spec = tmp / f"{tag}.json"
    spec.write_text(json.dumps({"images": images, "jobs": jobs, "out": str(out)}))
    got = subprocess.run([*cmd, str(Path(__file__).resolve()), "--worker", str(spec)],
                         env=env, text=True, stdout=subprocess.PIPE)
    if got.returncode:
        return {"error": f"exit {got.returncode} (signal {-got.returncode})"
                if got.returncode < 0 else f"exit {got.returncode}"}, {}
    facts = json.loads(got.stdout.strip().splitlines()[-1])
    with np.load(out) as npz:
        return facts, {k: npz[k] for k in npz.files}


def compare(native: np.ndarray, arm: np.ndarray, k: int = 5) -> dict[str, float]:
    """Row cosines, largest |difference|, and top-k neighbour overlap within the set."""
    a = native / np.maximum(np.linalg.norm(native, axis=1, keepdims=True), 1e-12)
    b = arm / np.maximum(np.linalg.norm(arm, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)

    def top(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    ta, tb = top(a), top(b)
    overlap = np.mean([len(set(r) & set(s)) / k for r, s in zip(ta, tb)])
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff": float(np.abs(a - b).max()), f"top{k}_overlap": float(overlap)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", action="append", type=Path,
                    help="bundle to check (repeatable; default: teacher + a student)")
    ap.add_argument("--per-label", type=int, default=3, help="sample photos per label (10 labels)")
    ap.add_argument("--cpu", action="append", choices=sorted(CPUS),
                    help="emulated core (repeatable; default: cortex-a72 and cortex-a76)")
    ap.add_argument("--name", default="arm_emulated", help="results/<name>.{json,md}")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    sys.path.insert(0, str(Path(__file__).parent))
    from _report import machine_info, write

    qemu = ensure_qemu()
    python = ensure_sysroot()
    python_minor = python.name.removeprefix("python")
    site, missing = ensure_wheels(python_minor)
    src = ensure_source()
    engines = {e for e, wheel in ENGINE_WHEEL.items()
               if not any(p.split("==")[0] == wheel for p in missing)}
    bundles = args.bundle or default_bundles()
    cpus = args.cpu or ["cortex-a72", "cortex-a76"]
    images = sample_images(args.per_label)

    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QEMU_"))}
    base_env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no arm64 .pyc files in the checkout
    arm_env = {**base_env, "PYTHONNOUSERSITE": "1", "PYTHONPATH": f"{src}{os.pathsep}{site}"}
    rows, arm_facts, failures = [], {}, []
    with tempfile.TemporaryDirectory(prefix="arm-check-") as tmp_name:
        tmp = Path(tmp_name)
        for bundle in bundles:
            print(f"{bundle}: native x86-64", file=sys.stderr, flush=True)
            nfacts, native = run_side([sys.executable], base_env, bundle, images,
                                      {"onnx", "tflite"}, tmp, "native")
            if "error" in nfacts:
                failures.append(f"{bundle.name}: the native run ended with {nfacts['error']}")
                continue
            shas = {f"{a['engine']}-{a['precision']}": a["sha256"]
                    for a in encoder_artifacts(bundle)}
            for cpu in cpus:
                print(f"{bundle}: emulated {cpu}", file=sys.stderr, flush=True)
                write_cpuinfo(cpu)
                cmd = [qemu, "-cpu", cpu, "-L", str(SYSROOT), str(python)]
                afacts, arm = run_side(cmd, arm_env, bundle, images, engines, tmp, cpu)
                if "error" in afacts:
                    failures.append(f"{bundle.name} on {cpu}: the emulated run ended with "
                                    f"{afacts['error']}")
                    continue
                arm_facts = {k: v for k, v in afacts.items() if k not in ("done", "failed")}
                for key, why in {**afacts["failed"], **nfacts.get("failed", {})}.items():
                    failures.append(f"{bundle.name} {key} on {cpu}: {why}")
                for key in sorted(k for k in set(native) & set(arm) if not k.endswith(RAW)):
                    precision = key.split("-")[1]
                    row = {"bundle": bundle.name, "artifact": key, "sha256": shas[key][:16],
                           "cpu": cpu, "images": len(images), **compare(native[key], arm[key])}
                    if key + RAW in native and key + RAW in arm:
                        raw = compare(native[key + RAW], arm[key + RAW])
                        row["engine_cosine_min"] = raw["cosine_min"]
                        row["engine_cosine_mean"] = raw["cosine_mean"]
                    fp32 = native.get(key.split("-")[0] + "-fp32")
                    if precision == "int8" and fp32 is not None:
                        row["native_int8_vs_fp32_cosine_mean"] = compare(fp32, native[key])[
                            "cosine_mean"]
                    row["meets_fp32_target"] = (row["cosine_min"] >= FP32_TARGET
                                                if precision == "fp32" else None)
                    rows.append(row)
                    print(f"  {key} {cpu}: cosine min {row['cosine_min']:.6f}", file=sys.stderr)

    qemu_version = _out([qemu, "--version"]).splitlines()[0]
    stamp = json.loads((SYSROOT / ".edgerec-ready").read_text())
    payload = {
        "host": machine_info(),
        "qemu": qemu_version,
        "emulated_cpus": {c: CPUS[c][0] for c in cpus},
        "arm64": {**arm_facts, "debian_python": stamp["debian_packages"].get(python.name),
                  "no_aarch64_wheel": missing},
        "images": len(images),
        "fp32_target": FP32_TARGET,
        "rows": rows,
        "failures": failures,
    }
    write(args.name, payload, markdown(payload))
    print(markdown(payload))


def markdown(p: dict) -> str:
    h, a = p["host"], p["arm64"]
    lines = [
        "# Embeddings on emulated arm64 vs x86-64 (same artifacts)",
        "",
        f"Measured {h['date']} by `benchmarks/arm_emulated.py` (`make arm-check`): "
        f"{p['images']} sample photos, 1 thread, each vector from `Encoder.embed` under "
        "qemu-user compared with the same artifact's vector on this host. Timings under "
        "emulation mean nothing and are not taken.",
        "",
        f"- host: {h['cpu']} ({h['machine']}, {', '.join(h['cpu_flags'])}), Python "
        f"{h['python']}, numpy {h['numpy']}, engines {h['engines']}",
        f"- emulator: {p['qemu']}; cores: "
        + ", ".join(f"`{c}` ({d})" for c, d in p["emulated_cpus"].items()),
        f"- arm64: Python {a.get('python')} (Debian {a.get('debian_python')}), numpy "
        f"{a.get('numpy')}, pillow {a.get('pillow')}, engines {a.get('engines')}",
        "",
        "| bundle | artifact | sha256 | emulated core | cosine min | cosine mean | max abs diff "
        "| top-5 overlap | engine output cosine min | int8 vs fp32 (x86) | fp32 target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        target = {True: "met", False: "MISSED", None: "-"}[r["meets_fp32_target"]]
        ref = r.get("native_int8_vs_fp32_cosine_mean")
        raw = r.get("engine_cosine_min")
        lines.append(
            f"| {r['bundle']} | {r['artifact']} | `{r['sha256']}` | {r['cpu']} | "
            f"{r['cosine_min']:.7f} | {r['cosine_mean']:.7f} | {r['max_abs_diff']:.2e} | "
            f"{r['top5_overlap']:.3f} | {'-' if raw is None else f'{raw:.7f}'} | "
            f"{'-' if ref is None else f'{ref:.4f}'} | {target} |")
    lines += ["", "cosine: the Encoder's vectors (whitened where the bundle has a whitening), "
              "emulated vs x86, per photo. engine output: the artifact's output before the "
              "whitening, which can magnify a small difference. int8 vs fp32 (x86): mean cosine "
              "of the int8 artifact's vectors to the fp32 artifact's of the same engine on this "
              "host, for scale."]
    if a.get("no_aarch64_wheel"):
        lines += ["", "No aarch64 wheel: " + "; ".join(
            f"{k} ({v})" for k, v in a["no_aarch64_wheel"].items())]
    if p["failures"]:
        lines += ["", "Failures:", *[f"- {f}" for f in p["failures"]]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
