"""The matrix a pipeline asks for, before revisions are resolved against a tree."""

from __future__ import annotations

from dataclasses import dataclass

from kbisect.config import Pipeline, Project


@dataclass(frozen=True)
class Axis:
    """One dimension of the matrix: its name and the values it takes."""

    name: str
    values: tuple[str, ...]


def axes(project: Project, pipeline: Pipeline) -> list[Axis]:
    """The pipeline's dimensions, with variants expanded from their experiments."""
    revisions: list[str] = []
    for rs in pipeline.revisions:
        revisions += [f"{rs.tree}:{r}" for r in rs.revisions]
        if rs.newest_tags:
            revisions.append(f"{rs.tree}:newest {rs.newest_tags} tags")
    variants: list[str] = []
    for vs in pipeline.experiments:
        names = vs.variants or [v.name for v in project.experiments[vs.experiment].variants]
        variants += [f"{vs.experiment}/{name}" for name in names]
    return [
        Axis("revisions", tuple(revisions)),
        Axis("variants", tuple(variants) or ("(tree as it is)",)),
        Axis("profiles", tuple(pipeline.profiles)),
        Axis("hosts", tuple(pipeline.hosts)),
        Axis("jobs", tuple(pipeline.jobs)),
        Axis("repeat", (str(pipeline.repeat),)),
    ]
