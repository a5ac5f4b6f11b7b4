"""spark.conf values as people write them (issue 16 point 7): YAML scalars become Spark's strings."""
import pytest

from starscale.config import load_config


def test_set_spark_conf_bool_becomes_spark_string():
    cfg = load_config(None, ["spark.conf.spark.eventLog.enabled=true",
                             "spark.conf.spark.speculation=false"])
    assert cfg.spark.conf["spark.eventLog.enabled"] == "true"
    assert cfg.spark.conf["spark.speculation"] == "false"


def test_overlay_spark_conf_scalars_become_strings(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("spark:\n  conf:\n    spark.ui.enabled: false\n"
                       "    spark.sql.shuffle.partitions: 8\n"
                       "    spark.memory.fraction: 0.5\n")
    conf = load_config([str(overlay)]).spark.conf
    assert (conf["spark.ui.enabled"], conf["spark.sql.shuffle.partitions"],
            conf["spark.memory.fraction"]) == ("false", "8", "0.5")


def test_spark_conf_null_or_list_is_still_refused_with_its_key():
    with pytest.raises(ValueError, match=r"spark\.conf\.spark\.jars"):
        load_config(None, ["spark.conf.spark.jars=[a, b]"])
    with pytest.raises(ValueError, match=r"spark\.conf\.spark\.x"):
        load_config(None, ["spark.conf.spark.x=null"])
