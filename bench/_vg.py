import asyncio, sys, tempfile, signal, subprocess, time, socket, os, re
from pathlib import Path
import preprocess
from bench import serve
N = int(sys.argv[1])
variants = sys.argv[2:]
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp)
    data = serve.training_file(preprocess.DEFAULT_OUTPUT, folder)
    X, _ = preprocess.load_dataset(data)['test']
    bodies = serve.canvases(X, 200)
    for v in variants:
        name, _, extra = v.partition('=')
        (folder / name).mkdir()
        port = serve.free_port()
        out = Path('/tmp/vg') / f'{name}.cg'; out.parent.mkdir(exist_ok=True)
        env = dict(os.environ, BTF_EXP=name.split('-')[0], PYTHONMALLOC='malloc')
        p = subprocess.Popen(['valgrind', '--tool=callgrind', '--instr-atstart=no', f'--callgrind-out-file={out}',
                              sys.executable, 'server.py', '--port', str(port), '--state', str(folder / name / 'state'), '--data', str(data), *extra.split()],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        t = time.time()
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError:
                time.sleep(0.5)
        async def go(n):
            c = serve.Connection(port)
            for i in range(n):
                assert await c.request('POST', '/predict', bodies[i % len(bodies)]) == 200
            c.close()
        asyncio.run(go(50))
        subprocess.run(['callgrind_control', '-i', 'on', str(p.pid)], capture_output=True)
        asyncio.run(go(N))
        subprocess.run(['callgrind_control', '-i', 'off', str(p.pid)], capture_output=True)
        subprocess.run(['callgrind_control', '-d', str(p.pid)], capture_output=True)
        time.sleep(2)
        p.send_signal(signal.SIGINT); p.wait(300)
        total = 0
        for f in out.parent.glob(f'{name}.cg*'):
            total = max([total] + [int(x) for x in re.findall(rb'totals: (\d+)', f.read_bytes())])
        print(name, 'instructions per request', total / N, 'startup s', round(time.time() - t), flush=True)
