"""Tests of the HTTP/1.1 codecs: a byte corpus, differential checks against h11."""
