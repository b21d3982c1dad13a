"""Runs CamPredictor.predict_fn under pyspark's predict_batch_udf on a local Spark (not a test:
Spark needs a JVM and a 400 MB pip install). What docs/python.md (gradcam.ray, Spark) shows, checked:

    pip install pyspark              # 4.0.0 was checked, with OpenJDK 17
    PYTHONPATH=python python3 scripts/check_spark.py

The DataFrames have one partition, so that each UDF call sees the same rows as the direct call it
is compared with (bit for bit, cpu backend)."""

import time
from pathlib import Path

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession

import gradcam
from gradcam.ray import CamPredictor, spark_return_type

ROOT = Path(__file__).resolve().parents[1]
SEED = str(ROOT / "examples" / "seed-cnn-shapes.safetensors")


def make_image_fn():
    return CamPredictor(SEED, backend="cpu", threads=1).predict_fn("image")


def make_target_fn():
    return CamPredictor(SEED, backend="cpu", threads=1).predict_fn("image", target=True)


def make_path_fn():
    return CamPredictor(SEED, backend="cpu", threads=1).predict_fn("path")


def make_bytes_fn():
    return CamPredictor(SEED, method=["gradcam", "gradcam++"], backend="cpu", threads=1).predict_fn("bytes")


def main():
    t = time.time()
    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    print(f"spark {spark.version}: started in {time.time() - t:.1f} s")
    direct = gradcam.Explainer(SEED, backend="cpu")

    # an array<float> column of flattened (3, 32, 32) images, one of them not finite
    x = np.load(ROOT / "examples" / "seed_input.npy")
    x[2, 0, 0, 0] = np.nan
    rows = [(i, x[i].reshape(-1).tolist(), [0, 1, -1, 2][i]) for i in range(4)]
    df = spark.createDataFrame(rows, "id int, image array<float>, target int").repartition(1)
    explain = predict_batch_udf(
        make_image_fn,
        return_type=spark_return_type("gradcam"),
        batch_size=32,
        input_tensor_shapes=[[3, 32, 32]],
    )
    out = df.withColumn("out", explain("image")).select("id", "out.*").orderBy("id").collect()
    ref = direct.explain(x)
    for r in out:
        assert np.array_equal(np.asarray(r.cam, np.float32).reshape(32, 32), ref.cam[r.id], equal_nan=True)
        assert r["class"] == ref.classes[r.id]
    assert out[2].error.startswith("non-finite input") and out[2]["class"] == -1
    assert out[2].probability is None  # Spark turns the NaN probability of a failed row into null
    print("image column: bit for bit, the non-finite row failed alone")

    explain = predict_batch_udf(
        make_target_fn,
        return_type=spark_return_type("gradcam"),
        batch_size=32,
        input_tensor_shapes=[[3, 32, 32], None],
    )
    out = df.withColumn("out", explain("image", "target")).select("id", "out.*").orderBy("id").collect()
    assert [r["class"] for r in out] == [0, 1, -1, 2]
    print("image and target columns: the classes asked for")

    paths = [str(ROOT / "examples" / n) for n in ("shapes1.png", "shapes2.png", "shapes3.jpg")]
    pdf = spark.createDataFrame(
        list(enumerate([*paths, "/nonexistent.png"])), "id int, path string"
    ).repartition(1)
    explain = predict_batch_udf(make_path_fn, return_type=spark_return_type("gradcam"), batch_size=32)
    out = pdf.withColumn("out", explain("path")).select("id", "out.*").orderBy("id").collect()
    ref = direct.explain_images(paths)
    for r in out[:3]:
        assert r.error == "" and np.array_equal(np.asarray(r.cam, np.float32).reshape(32, 32), ref.cam[r.id])
    assert "cannot read" in out[3].error and out[3]["class"] == -1
    print("path column: bit for bit, the missing file failed alone")

    bdf = spark.read.format("binaryFile").load(str(ROOT / "examples" / "shapes" / "*.png"))
    explain = predict_batch_udf(
        make_bytes_fn, return_type=spark_return_type(["gradcam", "gradcam++"]), batch_size=32
    )
    out = bdf.withColumn("out", explain("content")).select("path", "out.*").collect()
    assert len(out) == 6 and all(r.error == "" and len(r.cam_gradcampp) == 1024 for r in out)
    print("binaryFile content column with two methods:", sorted((Path(r.path).name, r["class"]) for r in out))
    spark.stop()
    print(f"total {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
