from stream.settings import Settings
from stream.topics import topic_specs


def test_every_field_reads_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA", "10.0.0.1:1234")
    monkeypatch.setenv("STREAMREC_TOPIC_PREFIX", "x-")
    monkeypatch.setenv("STREAMREC_CLICKS_PARTITIONS", "7")
    s = Settings()
    assert s.kafka == "10.0.0.1:1234"
    assert s.topic("clicks") == "x-clicks"
    assert {t.name: t.partitions for t in topic_specs(s)}["x-clicks"] == 7


def test_defaults_run_on_one_machine():
    s = Settings(_env_file=None)
    assert s.kafka.startswith("127.0.0.1:") and "127.0.0.1" in s.redis
    assert [t.name for t in topic_specs(s)] == ["clicks", "recommendations", "metrics", "model-updates", "dead-letters",
                                              "dbgd-feedback"]
    parts = {t.name: t.partitions for t in topic_specs(s)}
    assert parts["model-updates"] == parts["dbgd-feedback"] == 1  # one total order; one DBGD decision-maker


def test_a_published_first_version_explores_with_the_settings_alpha():
    """models cannot import the settings, so its fallback alpha is a copy: this keeps the copy honest."""
    from models.__main__ import PUBLISH_ALPHA

    assert PUBLISH_ALPHA == Settings.model_fields["dbgd_alpha"].default
