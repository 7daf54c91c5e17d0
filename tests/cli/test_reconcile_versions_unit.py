"""reconcile._versions on listings S3 can give but moto rarely does: a version and a delete
marker of one second, folder keys, several keys on one page."""

import datetime

from ratesctl import reconcile as reconcile_module

T = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def version(key, vid, seconds, latest=False):
    return {"Key": key, "VersionId": vid, "IsLatest": latest, "LastModified": T + datetime.timedelta(seconds=seconds),
            "ETag": f'"{vid}"', "Size": 1}


def marker(key, vid, seconds, latest=False):
    return {"Key": key, "VersionId": vid, "IsLatest": latest, "LastModified": T + datetime.timedelta(seconds=seconds)}


class Listing:
    """An S3 client whose list_object_versions gives ``pages`` (boto3's shape: versions and
    delete markers in two lists)."""

    def __init__(self, *pages):
        self.pages = pages

    def get_paginator(self, name):
        assert name == "list_object_versions"
        pages = self.pages
        return type("P", (), {"paginate": lambda _, **kw: iter(pages)})()


def listed(*pages):
    return [(key, info.version_id, latest) for key, info, latest in
            reconcile_module._versions(Listing(*pages), "b", "in/")]


def test_a_version_of_a_deletion_s_second_is_taken_as_behind_it():
    # put v1, delete, put v2, all in one second (S3's times are to the second).
    page = {"Versions": [version("in/k.csv", "v2", 0, latest=True), version("in/k.csv", "v1", 0)],
            "DeleteMarkers": [marker("in/k.csv", "m", 0)]}
    assert listed(page) == [("in/k.csv", "v2", True)]


def test_the_latest_version_put_in_its_deletion_s_second_is_still_listed():
    page = {"Versions": [version("in/k.csv", "v2", 0, latest=True)], "DeleteMarkers": [marker("in/k.csv", "m", 0)]}
    assert listed(page) == [("in/k.csv", "v2", True)]


def test_earlier_versions_come_newest_first_down_to_a_delete_marker_key_by_key():
    page = {"Versions": [version("in/a.csv", "a3", 30, latest=True), version("in/a.csv", "a2", 20),
                         version("in/a.csv", "a0", 0), version("in/b.csv", "b1", 10, latest=True),
                         version("in/b.csv", "b0", 5)],
            "DeleteMarkers": [marker("in/a.csv", "am", 10)]}
    assert listed(page) == [("in/a.csv", "a3", True), ("in/a.csv", "a2", False), ("in/b.csv", "b1", True),
                            ("in/b.csv", "b0", False)]


def test_a_key_s_delete_marker_on_an_earlier_page_keeps_its_older_versions_out():
    assert listed({"Versions": [version("in/k.csv", "v2", 20, latest=True)]},
                  {"DeleteMarkers": [marker("in/k.csv", "m", 10)]},
                  {"Versions": [version("in/k.csv", "v1", 0)]}) == [("in/k.csv", "v2", True)]


def test_folder_objects_are_not_listed():
    page = {"Versions": [version("in/", "f", 0, latest=True), version("in/sub/", "g", 0, latest=True),
                         version("in/sub/k.csv", "v", 0, latest=True)]}
    assert listed(page) == [("in/sub/k.csv", "v", True)]
