//! Questions asked at the terminal while rollouts run. One reader thread owns standard
//! input and hands each answer to the one question open now, so fleets released side by
//! side never take each other's answers. A fleet that cannot ask now is answered by
//! `immune approve` or `reject` from another shell, as always.

use std::io::BufRead;
use std::sync::{Mutex, Once};
use tokio::sync::oneshot;

/// The open question: where its answer goes, and which answers it takes.
struct Open {
    answer: oneshot::Sender<String>,
    takes: fn(&str) -> bool,
    /// Said again when a line is not an answer it takes.
    again: &'static str,
}

static OPEN: Mutex<Option<Open>> = Mutex::new(None);
static READER: Once = Once::new();

/// A question whose answer arrives later; dropped, it is no longer open.
pub type Answer = oneshot::Receiver<String>;

/// Opens a question that takes `yes` or `no`, unless another is open.
pub fn ask_yes_no() -> Option<Answer> {
    open(|line| matches!(line, "yes" | "no"), "Answer yes or no.")
}

/// Opens a question that takes any line, unless another is open.
pub fn ask_line() -> Option<Answer> {
    open(|_| true, "")
}

fn open(takes: fn(&str) -> bool, again: &'static str) -> Option<Answer> {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if open.as_ref().is_some_and(|o| !o.answer.is_closed()) {
        return None;
    }
    let (answer, rx) = oneshot::channel();
    *open = Some(Open {
        answer,
        takes,
        again,
    });
    READER.call_once(|| {
        std::thread::spawn(read_answers);
    });
    Some(rx)
}

fn read_answers() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let read = stdin.lock().read_line(&mut line).unwrap_or(0);
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if read == 0 {
            // End of input: nobody will answer here; the open question hears so.
            *open = None;
            return;
        }
        let answer = line.trim();
        match open.take() {
            Some(question) if !(question.takes)(answer) => {
                println!("{}", question.again);
                *open = Some(question);
            }
            Some(question) => {
                let _ = question.answer.send(answer.to_string());
            }
            // Nobody asked: the line answers nothing.
            None => {}
        }
    }
}
