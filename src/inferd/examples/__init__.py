"""The demo model repository that ``inferd demo`` serves: four small models trained in seconds, offline.

Each module (``spam``, ``eta``, ``ranker``, ``digits``) generates or loads its data, trains a model and writes
it in the form inferd serves; :func:`inferd.examples.build.build_demo_repository` builds them all. Nothing is
imported here, so that importing the package does not pull in the training frameworks.
"""
