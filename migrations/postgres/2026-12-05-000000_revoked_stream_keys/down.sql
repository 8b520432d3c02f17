DROP TABLE revoked_stream_keys;
