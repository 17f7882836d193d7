"""Runs cut into units of work: planning, per-unit reconstruction, resumable work
folders, execution engines (local processes or Dask), updates and region planning.

A run is planned as independent units (`twin.region.units`); each unit reads the points
its buildings need from every file around them and returns its buildings
(`twin.region.unit_run`); finished units are kept in a work folder
(`twin.region.workdir`) so that a run resumes where it stopped; the engines
(`twin.region.engines`) run units one by one, in local processes or on a Dask cluster.
"""
