"""Automatic analysis of recorded calls (seed 004): who spoke when, silences, overtalk,
line quality, flags, and a door for a site's own speech-to-text engine.

``vad`` finds each channel's speech, ``metrics`` measures it, ``flags`` judges the
figures against ``[analysis]``, ``worker`` runs the queue off the call's path,
``svg`` draws a call's timeline.
"""
