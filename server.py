"""HTTP API of better-tensorflow (stub until the server issue lands): GET /health."""
import argparse
import logging
import os

from sanic import Sanic, json


def create_app(name='better_tensorflow'):
    app = Sanic(name)

    @app.get('/health')
    async def health(request):
        return json({'status': 'ok'})

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default=os.environ.get('HOST', '127.0.0.1'))
    parser.add_argument('--port', type=int,
                        default=int(os.environ.get('PORT', os.environ.get('DOC_PORT', 8000))))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    create_app().run(host=args.host, port=args.port, single_process=True, access_log=False)


if __name__ == '__main__':
    main()
