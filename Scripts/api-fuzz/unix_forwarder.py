"""Forwards TCP connections on 127.0.0.1:PORT to a Unix socket, so that HTTP tools that only
speak TCP (schemathesis) can reach the API socket. Usage: unix_forwarder.py PORT SOCKET"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


async def handle(client_reader, client_writer, socket_path):
    try:
        server_reader, server_writer = await asyncio.open_unix_connection(socket_path)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
    client_writer.close()
    server_writer.close()


async def main(port, socket_path):
    server = await asyncio.start_server(lambda r, w: handle(r, w, socket_path), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
