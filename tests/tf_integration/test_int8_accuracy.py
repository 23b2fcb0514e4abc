"""INT8 accuracy on real images: a CNN trained (fixed seed, a few seconds) on
scikit-learn's handwritten digits, frozen, converted to INT8 with each
calibrator calibrating on training images, scored on held-out images against
FP32. The numbers are in each assertion message (and printed: see them with -rA)."""
import pytest

pytest.importorskip("sklearn")

from workflows.tf_main_job import convert_digits, predict, train_digits  # noqa: E402

TOLERANCE = 0.01        # top-1 within 1 point of FP32


@pytest.fixture(scope="module")
def digits():
    data = train_digits(epochs=8, seed=0)
    y = data["y_test"]
    data["acc_tf"] = float((predict(data, data["graph_def"], converted=False).argmax(1) == y)
                           .mean())
    _, fp32 = convert_digits(data, "FP32")
    data["acc_fp32"] = float((predict(data, fp32).argmax(1) == y).mean())
    return data


@pytest.mark.parametrize("algorithm", ["entropy", "minmax", "percentile"])
def test_int8_top1_within_one_point_of_fp32(digits, algorithm):
    y = digits["y_test"]
    conv, int8 = convert_digits(digits, "INT8", algorithm, calib_batch=128, calib_runs=4)
    n_int8 = sum(e["layer_precisions"].get("INT8", 0) for e in conv.report["engines"])
    acc = float((predict(digits, int8).argmax(1) == y).mean())
    msg = (f"digits top-1 on {len(y)} held-out images: TensorFlow FP32 "
           f"{100 * digits['acc_tf']:.2f}%, cupyrt FP32 {100 * digits['acc_fp32']:.2f}%, "
           f"cupyrt INT8 ({algorithm}, 512 calibration images, {n_int8} INT8 layers) "
           f"{100 * acc:.2f}%")
    print(msg)
    assert digits["acc_tf"] > 0.85, msg                  # the model learned something real
    assert n_int8 >= 3, msg                              # the convolutions really run INT8
    assert abs(acc - digits["acc_fp32"]) <= TOLERANCE, msg
