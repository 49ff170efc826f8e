"""Both real engines behind the one protocol: specs, batching, validation, failures."""

import numpy as np
import pytest
from conftest import TEACHER, TINY_ONNX, TINY_TFLITE
from edgerec.runtimes import (
    Device,
    Engine,
    RuntimeOptions,
    available_engines,
    engine_for_path,
    engine_versions,
    open_runtime,
)
from edgerec.sdk.errors import InferenceError, ModelError, RuntimeUnavailableError


def _input(spec, n, seed=0):
    shape = [n, *[d for d in spec.shape[1:]]]
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_both_engines_are_installed_in_the_test_environment():
    assert available_engines() == [Engine.ONNX, Engine.TFLITE]
    assert all(engine_versions().values())


def test_engine_is_chosen_from_the_file_suffix(tmp_path):
    assert engine_for_path("m.onnx") is Engine.ONNX
    assert engine_for_path("m.TFLITE") is Engine.TFLITE
    with pytest.raises(ModelError, match=r"neither \.onnx nor \.tflite"):
        engine_for_path(tmp_path / "m.pt")


def test_onnx_specs_have_dynamic_batch():
    with open_runtime(TINY_ONNX) as rt:
        (spec,) = rt.input_specs()
        assert spec.name == "image" and spec.shape == (None, 3, 32, 32)
        assert spec.dtype == "float32" and not spec.quantized
        assert rt.output_specs()[0].name == "embedding"
        assert rt.providers == ["CPUExecutionProvider"]


def test_teacher_specs_carry_quantization_parameters():
    with open_runtime(TEACHER) as rt:
        (spec,) = rt.input_specs()
        assert (spec.dtype, spec.scale, spec.zero_point) == ("uint8", 0.0078125, 128)
        out = rt.output_specs()[0]
        assert out.dtype == "uint8" and out.scale == pytest.approx(0.0235285, rel=1e-4)


@pytest.mark.parametrize("path", [TINY_ONNX, TINY_TFLITE, TEACHER], ids=lambda p: p.name)
def test_a_batch_equals_the_items_run_one_by_one(path):
    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        spec, out = rt.input_specs()[0], rt.output_specs()[0].name
        x = _input(spec, 5)
        batch = rt.run({spec.name: x})[out]
        singles = np.concatenate([rt.run({spec.name: x[i : i + 1]})[out] for i in range(5)])
        assert batch.shape[0] == 5 and batch.dtype == np.float32
        np.testing.assert_allclose(batch, singles, atol=1e-5)
        assert np.abs(batch[0] - batch[1]).max() > 0  # different inputs, different outputs


def test_litert_results_are_the_same_with_and_without_xnnpack():
    x = _input(open_runtime(TINY_TFLITE).input_specs()[0], 3)
    with open_runtime(TINY_TFLITE, options=RuntimeOptions(xnnpack=True)) as a, open_runtime(
        TINY_TFLITE, options=RuntimeOptions(xnnpack=False)
    ) as b:
        name = a.input_specs()[0].name
        out = a.output_specs()[0].name
        np.testing.assert_allclose(a.run({name: x})[out], b.run({name: x})[out], atol=1e-5)


def test_run_refuses_wrong_inputs_with_a_clear_message():
    with open_runtime(TINY_ONNX) as rt:
        with pytest.raises(InferenceError, match="missing"):
            rt.run({"nope": np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(InferenceError, match=r"expects \(None, 3, 32, 32\)"):
            rt.run({"image": np.zeros((1, 32, 32, 3), np.float32)})
        with pytest.raises(InferenceError, match="NaN"):
            rt.run({"image": np.full((1, 3, 32, 32), np.nan, np.float32)})


def test_an_empty_batch_gives_empty_outputs():
    with open_runtime(TINY_TFLITE) as rt:
        out = rt.run({rt.input_specs()[0].name: np.zeros((0, 32, 32, 3), np.float32)})
        assert next(iter(out.values())).shape == (0, 16)


def test_a_closed_runtime_refuses_to_run_and_close_is_idempotent():
    rt = open_runtime(TINY_ONNX)
    rt.close()
    rt.close()
    assert rt.closed
    with pytest.raises(InferenceError, match="closed"):
        rt.run({"image": np.zeros((1, 3, 32, 32), np.float32)})


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_a_file_that_is_not_a_model_raises_model_error(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelError, match=bad.name):
        open_runtime(bad)
    with pytest.raises(ModelError, match="No model file"):
        open_runtime(tmp_path / f"missing{suffix}")


def test_cuda_that_is_not_available_raises_instead_of_falling_back():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here; the refusal path cannot be exercised")
    with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider"):
        open_runtime(TINY_ONNX, options=RuntimeOptions(device=Device.CUDA))


def test_devices_an_engine_does_not_have_are_refused():
    with pytest.raises(RuntimeUnavailableError, match="cannot run on device 'gpu'"):
        open_runtime(TINY_ONNX, options=RuntimeOptions(device="gpu"))
    with pytest.raises(RuntimeUnavailableError, match="cannot run on device 'cuda'"):
        open_runtime(TINY_TFLITE, options=RuntimeOptions(device="cuda"))


def test_gpu_delegate_that_cannot_load_raises():
    try:
        rt = open_runtime(TINY_TFLITE, options=RuntimeOptions(device=Device.GPU))
    except RuntimeUnavailableError as exc:
        assert "GPU delegate" in str(exc)
    else:  # a machine with the delegate installed
        rt.close()


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="num_threads"):
        RuntimeOptions(num_threads=0)


@pytest.mark.parametrize("path", [TINY_ONNX, TINY_TFLITE, TEACHER])
def test_a_model_opened_from_its_bytes_runs_like_the_file(path):
    engine = engine_for_path(path)
    with open_runtime(path) as from_file, \
            open_runtime(path.read_bytes(), engine, name=path.name) as from_bytes:
        assert from_bytes.input_specs() == from_file.input_specs()
        assert from_bytes.output_specs() == from_file.output_specs()
        x = {s.name: _input(s, 2) for s in from_file.input_specs()}
        if path == TEACHER:
            x = {k: (v + 1) * 127 for k, v in x.items()}
        for name, value in from_file.run(x).items():
            np.testing.assert_allclose(from_bytes.run(x)[name], value, atol=1e-6)


def test_model_bytes_need_an_engine_and_bad_bytes_raise_model_error():
    with pytest.raises(ModelError, match="engine"):
        open_runtime(TINY_ONNX.read_bytes())
    for engine in Engine:
        with pytest.raises(ModelError, match="not-a-model"):
            open_runtime(b"\x00" * 64, engine, name="not-a-model")


@pytest.mark.parametrize("path", [TINY_ONNX, TINY_TFLITE, TEACHER])
def test_one_runtime_shared_by_eight_threads_gives_the_serial_results(path):
    """ONNX Runtime sessions are thread-safe; a LiteRT interpreter is not, so the adapter
    serialises its runs (without that: wrong outputs and "reference to internal data" errors)."""
    import threading

    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        (spec,) = rt.input_specs()
        scale = 127.0 if path == TEACHER else 1.0
        batches = [(_input(spec, 1 + s % 3, seed=s) + 1) * scale for s in range(8)]
        want = [rt.run({spec.name: b}) for b in batches]
        failures: list[object] = []

        def work(t: int) -> None:
            try:
                for n in range(12):
                    s = (t + n) % 8
                    got = rt.run({spec.name: batches[s]})
                    for name, value in want[s].items():
                        if not np.allclose(got[name], value, atol=1e-6):
                            failures.append((t, n, name))
            except Exception as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
