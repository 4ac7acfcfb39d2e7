package io.mlmanager.mlrunner.cache;

import io.mlmanager.mlrunner.block.ColumnBlock;
import io.mlmanager.mlrunner.runner.InputColumn;
import io.mlmanager.mlrunner.runner.LabelType;
import io.mlmanager.mlrunner.runner.ModelKind;
import io.mlmanager.mlrunner.runner.OutputColumn;
import io.mlmanager.mlrunner.runner.Runner;
import java.util.List;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * A cached runner that several threads score with while the cache may evict it: {@link #close()}
 * waits for the batches being scored, and a batch that comes after it fails with
 * {@link ModelClosedException} instead of touching a freed ONNX session.
 */
final class SharedRunner implements Runner {
    private final String modelId;
    private final Runner delegate;
    private final ReadWriteLock lock = new ReentrantReadWriteLock();
    private boolean closed;

    SharedRunner(String modelId, Runner delegate) {
        this.modelId = modelId;
        this.delegate = delegate;
    }

    @Override
    public ColumnBlock score(ColumnBlock inputs) {
        lock.readLock().lock();
        try {
            if (closed) {
                throw new ModelClosedException(modelId);
            }
            return delegate.score(inputs);
        } finally {
            lock.readLock().unlock();
        }
    }

    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            if (!closed) {
                closed = true;
                delegate.close();
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** Whether the cache has closed this runner. */
    boolean isClosed() {
        lock.readLock().lock();
        try {
            return closed;
        } finally {
            lock.readLock().unlock();
        }
    }

    @Override
    public ModelKind kind() {
        return delegate.kind();
    }

    @Override
    public List<InputColumn> inputs() {
        return delegate.inputs();
    }

    @Override
    public List<String> classes() {
        return delegate.classes();
    }

    @Override
    public List<OutputColumn> outputs() {
        return delegate.outputs();
    }

    @Override
    public LabelType labelType() {
        return delegate.labelType();
    }

    @Override
    public String format() {
        return delegate.format();
    }

    @Override
    public String toString() {
        return modelId + ": " + delegate;
    }
}
