package io.mlmanager.mlrunner.runner;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class NumberTextTest {
    @Test
    void levelsDropTheFractionOfIntegers() {
        assertEquals("1", NumberText.level(1.0));
        assertEquals("-3", NumberText.level(-3.0));
        assertEquals("0", NumberText.level(0.0));
        assertEquals("2.5", NumberText.level(2.5));
        assertEquals("1.0E20", NumberText.level(1e20));
    }

    @Test
    void pythonTextMatchesPythonStr() {
        // Expected values are Python's str(float).
        assertEquals("1.0", NumberText.python(1.0));
        assertEquals("-0.0", NumberText.python(-0.0));
        assertEquals("0.1", NumberText.python(0.1));
        assertEquals("123456.789", NumberText.python(123456.789));
        assertEquals("0.0001", NumberText.python(1e-4));
        assertEquals("1e-05", NumberText.python(1e-5));
        assertEquals("1.5e-07", NumberText.python(1.5e-7));
        assertEquals("1000000000000000.0", NumberText.python(1e15));
        assertEquals("1e+16", NumberText.python(1e16));
        assertEquals("-2.5e+20", NumberText.python(-2.5e20));
        assertEquals("inf", NumberText.python(Double.POSITIVE_INFINITY));
        assertEquals("nan", NumberText.python(Double.NaN));
    }

    @Test
    void parsingAcceptsWhatNumpyAccepts() {
        assertEquals(2.5, NumberText.parse(" 2.5 "));
        assertEquals(1e-3, NumberText.parse("1e-3"));
        assertTrue(Double.isNaN(NumberText.parse("NaN")));
        assertTrue(Double.isNaN(NumberText.parse(null)));
        assertEquals(Double.NEGATIVE_INFINITY, NumberText.parse("-inf"));
        assertThrows(NumberFormatException.class, () -> NumberText.parse(""));
        assertThrows(NumberFormatException.class, () -> NumberText.parse("1d"));
        assertThrows(NumberFormatException.class, () -> NumberText.parse("abc"));
    }
}
