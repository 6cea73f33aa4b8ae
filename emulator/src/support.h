// Helpers shared by the emulated libraries (cublas.cpp, cusparse.cpp), header-only so each library keeps its own
// copy with hidden visibility.
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

namespace frugal_emu_support {

// No standard-library templates here: built with little optimisation, their instances would be exported from
// the library (they have default visibility).
template <typename T>
T Min(T a, T b) {
    return b < a ? b : a;
}

template <typename T>
T Max(T a, T b) {
    return a < b ? b : a;
}

class Lock {
public:
    explicit Lock(pthread_mutex_t* mutex) : mutex_(mutex) { pthread_mutex_lock(mutex_); }
    ~Lock() { pthread_mutex_unlock(mutex_); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

private:
    pthread_mutex_t* mutex_;
};

// The live objects of one kind (handles, descriptors): few at a time, searched linearly.
class Registry {
public:
    bool Contains(const void* p) const {
        for (size_t i = 0; i < size_; ++i)
            if (items_[i] == p) return true;
        return false;
    }
    bool Add(const void* p) {
        if (size_ == capacity_) {
            const size_t capacity = capacity_ ? 2 * capacity_ : 16;
            void* grown = realloc(items_, capacity * sizeof(const void*));
            if (!grown) return false;
            items_ = static_cast<const void**>(grown);
            capacity_ = capacity;
        }
        items_[size_++] = p;
        return true;
    }
    bool Remove(const void* p) {
        for (size_t i = 0; i < size_; ++i)
            if (items_[i] == p) {
                items_[i] = items_[--size_];
                return true;
            }
        return false;
    }

private:
    const void** items_ = nullptr;
    size_t size_ = 0, capacity_ = 0;
};

// A fixed-size array of T.
template <typename T>
class Array {
public:
    Array() = default;
    Array(const Array&) = delete;
    Array& operator=(const Array&) = delete;
    ~Array() { delete[] data_; }
    void Reset(size_t n, T value) {
        delete[] data_;
        data_ = new T[n > 0 ? n : 1];
        size_ = n;
        for (size_t i = 0; i < n; ++i) data_[i] = value;
    }
    T& operator[](size_t i) { return data_[i]; }
    const T& operator[](size_t i) const { return data_[i]; }
    T* data() { return data_; }

private:
    T* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace frugal_emu_support
