"""HTTP/1.1 message codecs, sans-I/O: a parser per connection leg (h11 or llhttp) and one writer."""
