"""MovieLens releases (GroupLens): 100K, 1M, 20M, ml-latest-small and ml-latest.

Item text is split into separate fields: `title` (without the year suffix), `year` (int or null)
and `genres` (a list of strings); ml-20m / ml-latest also give `tags` (distinct user tags, most
frequent first) when `tags.csv` is present. User features come from `u.user` / `users.dat`.

Typed features: items `genres` (array), `year` (continuous) and `tags` (array, most frequent first,
so a model that keeps K tags per movie, `ArrayFeature.padded(K)`, keeps its top K); users `age`, `gender`, `occupation` and `zip_prefix` (the first character
of the zip code: the US national ZIP area), all sparse.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from genrec.data.features import FeatureSpec
from genrec.data.raw import Release
from genrec.data.sources.base import RawTables, Source, check_no_nulls
from genrec.data.sources.readers import read_table, split_lines
from genrec.errors import DataError

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

# u.genre of the 100K release, used when the file is absent (index = position of the flag in u.item)
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

ITEM_FEATURES = [FeatureSpec("genres", "array"), FeatureSpec("year", "continuous", "standard")]
USER_FEATURES = [FeatureSpec(name, "sparse") for name in ("age", "gender", "occupation", "zip_prefix")]

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")


def split_title_year(raw_title: str) -> tuple[str, int | None]:
    """`"Toy Story (1995)"` -> `("Toy Story", 1995)`; a title without a year keeps year None."""
    match = _TITLE_YEAR.match(raw_title)
    if match is None or not match.group("title"):
        return raw_title.strip(), None
    return match.group("title"), int(match.group("year"))


def _item_table(ids: list[int], titles: list[str], genres: list[list[str]], extra: dict | None = None) -> pa.Table:
    split = [split_title_year(t) for t in titles]
    columns = {
        "item": pa.array(ids, pa.int64()),
        "title": pa.array([s[0] for s in split], pa.string()),
        "year": pa.array([s[1] for s in split], pa.int32()),
        "genres": pa.array(genres, pa.list_(pa.string())),
    }
    columns.update(extra or {})
    return pa.table(columns)


def _ratings(table: pa.Table, path: Path, first_line: int) -> pa.Table:
    check_no_nulls(table, ["user", "item", "rating", "timestamp"], str(path), first_line)
    return pa.table(
        {
            "user": table["user"],
            "item": table["item"],
            "timestamp": table["timestamp"],
            "rating": table["rating"].cast(pa.float32()),
        }
    )


class MovieLens100K(Source):
    name = "ml-100k"
    release = Release(
        "ml-100k",
        "ml-100k",
        ("u.data", "u.item"),
        _GROUPLENS + "ml-100k.zip",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    )

    def read(self, raw: Path) -> RawTables:
        names = ["user", "item", "rating", "timestamp"]
        types = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
        ratings = read_table(raw / "u.data", types, "\t", column_names=names, quoted=False)
        files = [raw / "u.data", raw / "u.item"]
        genre_names = list(ML100K_GENRES)
        if (raw / "u.genre").is_file():
            genre_names = [f[0] for _, f in split_lines(raw / "u.genre", "|", 2, "latin-1")]
            files.append(raw / "u.genre")
        ids, titles, genres = [], [], []
        num_fields = 5 + len(genre_names)
        for lineno, f in split_lines(raw / "u.item", "|", num_fields, "latin-1"):
            try:
                ids.append(int(f[0]))
                flags = [int(x) for x in f[5:]]
            except ValueError:
                raise DataError(f"{raw / 'u.item'}, line {lineno}: movie id and genre flags must be integers") from None
            titles.append(f[1])
            genres.append([g for g, flag in zip(genre_names, flags) if flag])
        users = None
        if (raw / "u.user").is_file():
            files.append(raw / "u.user")
            rows = [f for _, f in split_lines(raw / "u.user", "|", 5, "latin-1")]
            users = _user_table(rows, raw / "u.user", order=(0, 1, 2, 3, 4))
        return RawTables(
            interactions=_ratings(ratings, raw / "u.data", 1),
            items=_item_table(ids, titles, genres),
            users=users,
            files=files,
            text_fields=["title", "year", "genres"],
            item_features=ITEM_FEATURES,
            user_features=USER_FEATURES if users is not None else [],
        )


def _user_table(rows: list[list[str]], path: Path, order: tuple[int, int, int, int, int]) -> pa.Table:
    """User features from rows of (id, age, gender, occupation, zip) in the positions `order` gives."""
    uid, age, gender, occupation, zipcode = order
    try:
        return pa.table(
            {
                "user": pa.array([int(r[uid]) for r in rows], pa.int64()),
                "age": pa.array([int(r[age]) for r in rows], pa.int32()),
                "gender": pa.array([r[gender] for r in rows], pa.string()),
                "occupation": pa.array([r[occupation] for r in rows], pa.string()),
                "zip": pa.array([r[zipcode] for r in rows], pa.string()),
                "zip_prefix": pa.array([r[zipcode].strip()[:1] or None for r in rows], pa.string()),
            }
        )
    except ValueError as exc:
        raise DataError(f"{path}: user id and age must be integers ({exc})") from None


class MovieLens1M(Source):
    name = "ml-1m"
    release = Release(
        "ml-1m",
        "ml-1m",
        ("ratings.dat", "movies.dat"),
        _GROUPLENS + "ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    )

    def read(self, raw: Path) -> RawTables:
        names = ["user", "item", "rating", "timestamp"]
        types = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
        ratings = read_table(raw / "ratings.dat", types, "::", column_names=names, encoding="latin-1", quoted=False)
        files = [raw / "ratings.dat", raw / "movies.dat"]
        ids, titles, genres = [], [], []
        for lineno, f in split_lines(raw / "movies.dat", "::", 3, "latin-1"):
            try:
                ids.append(int(f[0]))
            except ValueError:
                raise DataError(f"{raw / 'movies.dat'}, line {lineno}: movie id must be an integer") from None
            titles.append(f[1])
            genres.append([g for g in f[2].split("|") if g])
        users = None
        if (raw / "users.dat").is_file():
            files.append(raw / "users.dat")
            rows = [f for _, f in split_lines(raw / "users.dat", "::", 5, "latin-1")]
            users = _user_table(rows, raw / "users.dat", order=(0, 2, 1, 3, 4))
        return RawTables(
            interactions=_ratings(ratings, raw / "ratings.dat", 1),
            items=_item_table(ids, titles, genres),
            users=users,
            files=files,
            text_fields=["title", "year", "genres"],
            item_features=ITEM_FEATURES,
            user_features=USER_FEATURES if users is not None else [],
        )


class MovieLensCSV(Source):
    """The CSV releases (ml-20m, ml-latest, ml-latest-small): ratings.csv, movies.csv, tags.csv."""

    name = "ml-20m"
    release = Release(
        "ml-20m",
        "ml-20m",
        ("ratings.csv", "movies.csv"),
        _GROUPLENS + "ml-20m.zip",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    )

    def read(self, raw: Path) -> RawTables:
        types = {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
        ratings = read_table(raw / "ratings.csv", types, ",")
        ratings = ratings.rename_columns(["user", "item", "rating", "timestamp"])
        movie_types = {"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()}
        movies = read_table(raw / "movies.csv", movie_types, ",")
        check_no_nulls(movies, ["movieId"], str(raw / "movies.csv"), 2)
        files = [raw / "ratings.csv", raw / "movies.csv"]
        genres = [[] if g in (None, "(no genres listed)") else g.split("|") for g in movies["genres"].to_pylist()]
        ids = movies["movieId"].to_pylist()
        extra = {}
        text_fields = ["title", "year", "genres"]
        features = list(ITEM_FEATURES)
        if (raw / "tags.csv").is_file():
            files.append(raw / "tags.csv")
            extra["tags"] = pa.array(_tags_per_movie(raw / "tags.csv", ids), pa.list_(pa.string()))
            text_fields.append("tags")
            features.append(FeatureSpec("tags", "array"))
        titles = [t or "" for t in movies["title"].to_pylist()]
        return RawTables(
            interactions=_ratings(ratings, raw / "ratings.csv", 2),
            items=_item_table(ids, titles, genres, extra),
            files=files,
            text_fields=text_fields,
            item_features=features,
        )


def _tags_per_movie(path: Path, movie_ids: list[int]) -> list[list[str]]:
    """Distinct tags of each movie, most frequent first (ties: first seen first)."""
    tags = read_table(path, {"movieId": pa.int64(), "tag": pa.string()}, ",")
    counters: dict[int, Counter] = {}
    for movie, tag in zip(tags["movieId"].to_pylist(), tags["tag"].to_pylist()):
        if tag:
            counters.setdefault(movie, Counter())[tag.strip()] += 1
    return [[t for t, _ in counters[m].most_common()] if m in counters else [] for m in movie_ids]


class MovieLensLatestSmall(MovieLensCSV):
    name = "ml-latest-small"
    # ml-latest* change over time, so no fixed checksum: the manifest records the files' sha256
    release = Release(
        "ml-latest-small", "ml-latest-small", ("ratings.csv", "movies.csv"), _GROUPLENS + "ml-latest-small.zip"
    )


class MovieLensLatest(MovieLensCSV):
    name = "ml-latest"
    release = Release("ml-latest", "ml-latest", ("ratings.csv", "movies.csv"), _GROUPLENS + "ml-latest.zip")
